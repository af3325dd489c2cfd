"""Clinicians sign in to the console with their organisation's OpenID Provider, in a real browser,
against a real provider: node `oidc-provider` (tests/browser/oidc/provider.mjs) on loopback,
installed by npm into a cache folder outside the repository. The console's sessions live in
SchizodotConsoleSessions on moto's DynamoDB over HTTP.

Covered: sign-in and sign-out; an idle timeout (shortened here); a session a clinic admin ended;
a tampered state; a replayed code; a wrong nonce; an ID token for another audience; a person
without a mapped role; the MFA requirement met and not met; and the audit record of each."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import pytest

from services.results.console.session_store import DynamoSessionStore
from services.results.console.sessions import SessionPolicy
from services.results.console.tests.fakes import Console
from shared.aws.clients import async_client
from shared.domain.clinics import ClinicDirectory, ClinicProfile, SignInProvider
from tests.browser.servers import BackgroundServer

HERE = Path(__file__).resolve().parent
OIDC_PROVIDER_VERSION = "9.13.3"
CACHE = Path(os.environ.get("SCHIZODOT_NODE_CACHE", Path.home() / ".cache" / "schizodot" / "node"))
AXE_VERSION = "4.10.3"
SECRET = "north-console-secret-0123456789abcdef"
USERS = {"dr-north": {"name": "Dr North", "groups": ["north-clinicians"]},
         "boss-north": {"name": "Boss North", "groups": ["north-admins", "north-clinicians"]},
         "visitor": {"name": "Vera Visitor", "groups": ["cafeteria"]}}


def npm_package(name: str, version: str) -> Path:
    """`name@version` installed by npm under the cache folder (once); its folder."""
    folder = CACHE / f"{name.replace('/', '_')}-{version}"
    package = folder / "node_modules" / name
    if not (package / "package.json").exists():
        if shutil.which("npm") is None or shutil.which("node") is None:
            pytest.fail("node and npm are needed for the sign-in tests: run `make setup`", pytrace=False)
        folder.mkdir(parents=True, exist_ok=True)
        # npm's own cache first (offline), else the npm registry
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefer-offline", "--prefix",
                               str(folder), f"{name}@{version}"], timeout=300, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"npm could not install {name}@{version}:\n{done.stderr[-2000:]}", pytrace=False)
    return package


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(aws_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("oidc")
    provider_port = free_port()
    issuer = f"http://127.0.0.1:{provider_port}"
    secret_file = folder / "north-oidc-secret"
    secret_file.write_text(SECRET)

    def entry(id_: str, client: str, **more) -> SignInProvider:
        return SignInProvider(id=id_, name=f"Test Health ({id_})", issuer=issuer, client_id=client,
                              client_secret_file=secret_file, scopes=("openid", "profile", "groups"),
                              role_claim="groups", roles={"clinician": ("north-clinicians",),
                                                          "clinic_admin": ("north-admins",)}, **more)
    clinics = ClinicDirectory(clinics={"clinic-north": ClinicProfile(name="North Clinic", sign_in=(
        entry("hospital", "console-north"), entry("hospital-mfa", "console-north", require_mfa=True),
        entry("mixup", "console-mixup")))})
    holder: dict[str, Console] = {}

    @asynccontextmanager
    async def app_factory():
        async with async_client(aws_server, "dynamodb") as dynamodb:
            holder["console"] = Console(folder / "identity", clinics=clinics, session_store=DynamoSessionStore(
                dynamodb, aws_server.console_sessions_table))
            yield holder["console"].app

    server = BackgroundServer(app_factory)
    callback = f"{server.url}/console/login/callback"
    clients = [{"client_id": c, "client_secret": SECRET, "redirect_uris": [callback],
                "grant_types": ["authorization_code"], "response_types": ["code"]}
               for c in ("console-north", "console-mixup")]
    config = folder / "provider.json"
    config.write_text(json.dumps({"port": provider_port, "clients": clients, "users": USERS,
                                  "mixup_client": "console-mixup"}))
    # ES modules resolve packages from the node_modules beside the script: run a copy there.
    script = npm_package("oidc-provider", OIDC_PROVIDER_VERSION).parents[1] / "provider.mjs"
    shutil.copyfile(HERE / "oidc" / "provider.mjs", script)
    node = subprocess.Popen(["node", str(script), str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        said: list[str] = []
        while not (said and said[-1].startswith("ready")):  # warnings first (the in-memory adapter, dev keys)
            said.append(node.stdout.readline())
            assert said[-1], "oidc-provider did not start:\n" + "".join(said)
        with server:
            yield server.url, holder["console"], issuer
    finally:
        node.terminate()
        node.wait(10)


@pytest.fixture
def context(browser):
    context = browser.new_context(bypass_csp=True)
    yield context
    context.close()


def sign_in(page, url: str, provider: str = "hospital", user: str = "dr-north", otp: bool = False) -> None:
    page.goto(f"{url}/console/login?clinic=clinic-north")
    page.click(f"#provider-clinic-north-{provider}")
    page.wait_for_load_state("load")
    if page.locator("#username").count():  # else the provider remembers the person (its own session)
        page.fill("#username", user)
        if otp:
            page.check("#otp")
        page.click("#provider-submit")
        page.wait_for_load_state("load")


def arrive(page, target: str) -> None:
    try:
        page.wait_for_url(target, timeout=15000)
    except Exception as error:
        raise AssertionError(f"at {page.url}: {page.inner_text('body')[:600]}") from error


def axe_clean(page) -> None:
    axe = npm_package("axe-core", AXE_VERSION) / "axe.min.js"
    page.add_script_tag(path=str(axe))
    violations = page.evaluate("async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa']})).violations")
    assert violations == [], [v["id"] for v in violations]


def refusal(page) -> str:
    """The sign-in page's refusal, or where the browser ended up instead."""
    try:
        return page.locator("#login-problem").inner_text(timeout=15000)
    except Exception as error:
        raise AssertionError(f"no refusal at {page.url}: {page.inner_text('body')[:600]}") from error


def actions(console: Console, since: int = 0) -> list[tuple[str, str, str]]:
    return [(r["action"], r["outcome"], str(r["detail"].get("reason", ""))) for r in console.audit_records()[since:]]


def test_sign_in_and_sign_out_with_the_clinics_provider(site, context):
    url, console, issuer = site
    before = len(console.audit_records())
    page = context.new_page()
    page.goto(f"{url}/console/patients/patient-101")
    assert urlsplit(page.url).path == "/console/login"  # no session: the sign-in page, offering the provider
    assert page.locator("#provider-clinic-north-hospital").inner_text() == "Sign in with Test Health (hospital)"
    axe_clean(page)
    sign_in(page, url)
    arrive(page, f"{url}/console/")
    assert "signed in as Dr North" in page.locator(".who").inner_text()
    cookie = next(c for c in context.cookies() if c["name"] == "schizodot_session")
    assert cookie["value"].startswith("scs_") and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    axe_clean(page)
    page.click("text=Sign out")
    arrive(page, f"{url}/console/login?ended=signed_out")
    assert "You are signed out" in page.locator("#login-ended").inner_text()
    # the old cookie, replayed, opens nothing: logout deleted the session on the server
    context.add_cookies([{**cookie}])
    page.goto(f"{url}/console/")
    assert urlsplit(page.url).path == "/console/login"
    records = console.audit_records()[before:]
    assert [(r["action"], r["actor"], r["detail"].get("method")) for r in records
            if r["action"] in ("console.sign_in", "console.sign_out")] == [
        ("console.sign_in", "hospital:dr-north", "oidc:hospital"), ("console.sign_out", "hospital:dr-north",
                                                                    "oidc:hospital")]


def test_an_idle_session_ends_and_the_page_says_why(site, context):
    url, console, _ = site
    console.sessions.policy = SessionPolicy(idle_seconds=2)
    try:
        page = context.new_page()
        sign_in(page, url)
        arrive(page, f"{url}/console/")
    finally:
        console.sessions.policy = SessionPolicy()
    time.sleep(3.2)
    page.goto(f"{url}/console/alerts")
    assert "ended=idle" in page.url
    assert "without activity" in page.locator("#login-ended").inner_text()
    assert ("console.session_timeout", "success", "idle") in actions(console)
    axe_clean(page)


def test_a_clinic_admin_ends_all_sessions_of_a_person(site, browser):
    url, console, _ = site
    clinician, admin = browser.new_context(), browser.new_context(bypass_csp=True)
    try:
        doctor = clinician.new_page()
        sign_in(doctor, url)
        arrive(doctor, f"{url}/console/")
        boss = admin.new_page()
        sign_in(boss, url, user="boss-north")
        arrive(boss, f"{url}/console/")  # the "Signed in" page moves on by itself; let it, then go on
        boss.goto(f"{url}/console/sessions")
        axe_clean(boss)
        boss.click("button[aria-label='End all sessions of Dr North']")
        assert "1 session(s) of hospital:dr-north" in boss.locator("#sessions-ended").inner_text()
        doctor.goto(f"{url}/console/alerts")
        assert "ended=revoked" in doctor.url and "administrator ended" in doctor.locator("#login-ended").inner_text()
        revoked = [r for r in console.audit_records() if r["action"] == "console.sessions_revoked"][-1]
        assert revoked["actor"] == "hospital:boss-north" and revoked["detail"]["person"] == "hospital:dr-north"
        # a clinician may not end anyone's sessions
        sign_in(doctor, url)
        arrive(doctor, f"{url}/console/")
        assert doctor.goto(f"{url}/console/sessions").status == 403
    finally:
        clinician.close()
        admin.close()


def _with(target: str, name: str, value: str) -> str:
    parts = urlsplit(target)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def steer(page, issuer: str, edit) -> None:
    """Lets `edit(url)` change where the sign-in's redirects lead (the provider's authorization
    request, the console's callback). Playwright routes only the first request of a redirect chain,
    so the chains that start at the console's provider link and at the provider's login form are
    followed here, hop by hop with the browser context's cookies, until the next page the browser
    must show: the provider's login screen or the console's callback, where the browser goes."""
    def follow(route) -> None:
        if route.request.method != "POST" and "/interaction/" in route.request.url:
            route.continue_()  # the login screen itself
            return
        response = route.fetch(max_redirects=0)
        while response.status in (301, 302, 303, 307):
            target = edit(urljoin(route.request.url if response.url == route.request.url else response.url,
                                  response.headers["location"]))
            if not target.startswith(issuer) or "/interaction/" in target:
                route.fulfill(status=303, headers={"Location": target, "Cache-Control": "no-store"})
                return
            response = page.context.request.get(target, max_redirects=0)
        route.fulfill(response=response)

    page.route("**/console/login/oidc?**", follow)
    page.route(f"{issuer}/interaction/**", follow)


def test_a_tampered_state_is_refused(site, context):
    url, console, issuer = site
    page = context.new_page()
    callback = f"{url}/console/login/callback?"
    steer(page, issuer, lambda to: _with(to, "state", "tampered" + "x" * 40) if to.startswith(callback) else to)
    sign_in(page, url)
    assert "cannot be completed" in refusal(page)
    assert "schizodot_session" not in {c["name"] for c in context.cookies()}  # no session began
    assert ("console.sign_in", "refused", "state") in actions(console)


def test_a_replayed_code_is_refused(site, context):
    url, console, issuer = site
    page = context.new_page()
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url) if "/login/callback?" in request.url else None)
    sign_in(page, url)
    arrive(page, f"{url}/console/")
    first = seen[-1]
    page.goto(first)  # the same callback again: its state was used up
    assert "cannot be completed" in refusal(page)
    # the used code with a fresh sign-in's state: the provider refuses the code (and its PKCE verifier)
    old_code = parse_qs(urlsplit(first).query)["code"][0]
    callback = f"{url}/console/login/callback?"
    steer(page, issuer, lambda to: _with(to, "code", old_code) if to.startswith(callback) else to)
    sign_in(page, url)
    assert "did not accept this sign-in" in refusal(page)
    assert ("console.sign_in", "refused", "code") in actions(console)


def test_a_wrong_nonce_is_refused(site, context):
    url, console, issuer = site
    page = context.new_page()
    steer(page, issuer, lambda to: _with(to, "nonce", "someone-elses-nonce") if to.startswith(f"{issuer}/auth?")
          else to)
    sign_in(page, url)
    assert "nonce differs" in refusal(page)
    assert ("console.sign_in", "refused", "nonce") in actions(console)


def test_an_id_token_for_another_audience_is_refused(site, context):
    url, console, _ = site
    page = context.new_page()
    sign_in(page, url, provider="mixup")
    assert "issued to another application" in refusal(page), actions(console)[-1]
    assert ("console.sign_in", "refused", "id_token:InvalidAudienceError") in actions(console)


def test_a_person_without_a_mapped_role_is_refused_and_told_why(site, context):
    url, console, _ = site
    page = context.new_page()
    sign_in(page, url, user="visitor")
    text = refusal(page)
    assert "Vera Visitor" in text and "no role in the console of North Clinic" in text and "“groups”" in text
    assert ("console.sign_in", "refused", "no_role") in actions(console)
    axe_clean(page)


def test_the_clinics_mfa_requirement(site, browser):
    url, console, _ = site
    for otp in (False, True):
        context = browser.new_context()
        try:
            page = context.new_page()
            sign_in(page, url, provider="hospital-mfa", otp=otp)
            if otp:
                arrive(page, f"{url}/console/")
                signed = [r for r in console.audit_records() if r["action"] == "console.sign_in"][-1]
                assert signed["outcome"] == "success" and "otp" in signed["detail"]["amr"]
            else:
                assert "requires multi-factor authentication" in refusal(page)
                assert ("console.sign_in", "refused", "mfa") in actions(console)
        finally:
            context.close()
