"""docker-compose.yml validates with both tools, takes every setting from
.env.example, and configures the services with names their settings read."""

from __future__ import annotations

import re

import pytest
import yaml

from shared.runtime.topology import STAGES
from shared.settings import CommonSettings
from tests.deploy.support import (
    REPO,
    SETTINGS,
    check_clinics_file,
    reads_clinics_file,
    run_tool,
    settings_from,
    tool,
    unknown_variables,
)

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
# Variables of the user's shell that would change what `config` prints.
_CLEAN = {"COMPOSE_PROFILES": "", "COMPOSE_FILE": "", "COMPOSE_PROJECT_NAME": "schizodot"}


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    """The file as docker-compose 1.29 resolves it (anchors merged, defaults filled in),
    run from a copy so that a developer's own .env does not change the answer."""
    folder = tmp_path_factory.mktemp("compose")
    (folder / "docker-compose.yml").write_text(COMPOSE.read_text())
    result = run_tool(tool("docker-compose"), "config", cwd=folder, env=_CLEAN)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_spec_schema():
    result = run_tool(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_accepts_it():
    result = run_tool(tool("docker-compose"), "-f", str(COMPOSE), "config", "-q", env=_CLEAN)
    assert result.returncode == 0, result.stderr


def test_every_variable_comes_from_env_example_with_the_same_default():
    text = COMPOSE.read_text()
    used = dict(re.findall(r"\$\{([A-Z0-9_]+):-([^}]*)\}", text))
    bare = set(re.findall(r"\$\{([A-Z0-9_]+)\}", text))
    assert not bare, f"variables without a default: {sorted(bare)}"
    example = env_example()
    assert set(used) == set(example), (
        f"only in compose: {sorted(set(used) - set(example))}; only in .env.example: {sorted(set(example) - set(used))}"
    )
    assert {k: used[k] for k in used} == {k: example[k] for k in used}


def test_local_aws_is_moto_by_default_and_localstack_is_a_profile(resolved):
    services = resolved["services"]
    assert services["moto"]["image"].startswith("motoserver/moto:")
    assert "profiles" not in services["moto"]
    assert services["localstack"]["profiles"] == ["localstack"]  # started only with --profile localstack
    assert services["localstack"]["image"].startswith("localstack/localstack:")
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")


def test_one_init_step_creates_the_resources_from_shared_infra(resolved, monkeypatch):
    init = resolved["services"]["aws-init"]
    assert init["command"] == ["python", "-m", "shared.runtime.infra"]
    settings = settings_from(CommonSettings, init["environment"], monkeypatch)
    assert settings.aws_endpoint_url == "http://moto:4566"
    for stage in STAGES:
        service = resolved["services"][stage]
        assert service["depends_on"]["aws-init"]["condition"] == "service_completed_successfully"
        # Services and the init step see the same resources.
        mine = settings_from(SETTINGS[stage], service["environment"], monkeypatch)
        assert (mine.queue_name(stage), mine.dead_letter_queue_name(stage)) == (
            settings.queue_name(stage), settings.dead_letter_queue_name(stage))
        assert (mine.jobs_table, mine.users_table, mine.bucket, mine.aws_endpoint_url) == (
            settings.jobs_table, settings.users_table, settings.bucket, settings.aws_endpoint_url)


def test_services_get_only_variables_their_settings_read(resolved, monkeypatch):
    for stage in STAGES:
        service = resolved["services"][stage]
        assert unknown_variables(stage, service["environment"]) == [], stage
        settings = settings_from(SETTINGS[stage], service["environment"], monkeypatch)
        assert (settings.jobs_table, settings.users_table) == ("SchizodotJobs", "SchizodotUsers")
        assert settings.queue_name(stage) == f"schizodot-{stage}"
        # docker stops a container after stop_grace_period: leave time to release messages.
        grace = int(service["stop_grace_period"].rstrip("s"))
        assert grace >= settings.shutdown_grace_seconds + 10, stage
        # Locked down as the Kubernetes manifests demand (tests/deploy/test_k8s.py checks those).
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"]
        assert service["build"]["target"] == "runtime"
    assert settings_from(SETTINGS["ingest"], resolved["services"]["ingest"]["environment"],
                         monkeypatch).api_host == "0.0.0.0"


def test_the_apis_check_tokens_of_the_development_issuer_which_alone_holds_its_key(resolved, monkeypatch):
    from shared.identity.tokens import AuthSettings

    services = resolved["services"]
    issuer = services["dev-issuer"]
    assert issuer["entrypoint"] == ["python", "/opt/schizodot/dev_identity.py"]
    published = issuer["command"][issuer["command"].index("--publish") + 1]
    assert issuer["read_only"] is True and issuer["cap_drop"] == ["ALL"]
    assert named_volumes(issuer)["dev-issuer"] == (issuer["environment"]["SCHIZODOT_DEV_ISSUER_DIR"], "rw")
    for api in ("ingest", "results"):
        service = services[api]
        auth = settings_from(AuthSettings, service["environment"], monkeypatch)
        assert auth.bearer_configured and auth.issuer == "https://dev-issuer.schizodot.invalid"
        assert str(auth.jwks_file) == published
        mounts = named_volumes(service)
        assert mounts["auth-jwks"][1] == "ro" and "dev-issuer" not in mounts  # never the private key
        assert str(auth.jwks_file).startswith(mounts["auth-jwks"][0] + "/")
        assert service["depends_on"]["dev-issuer"]["condition"] == "service_completed_successfully"
        # no default key: the APIs refuse to start without one from .env, and a published one anywhere
        assert "SCHIZODOT_PSEUDONYM_KEY" in service["environment"] and not service["environment"]["SCHIZODOT_PSEUDONYM_KEY"]
    assert "RESULTS_CONSOLE_CSRF_KEY" in services["results"]["environment"]
    for stage in set(STAGES) - {"ingest", "results"}:
        assert not [k for k in services[stage]["environment"] if k.startswith("SCHIZODOT_AUTH_")], stage


def named_volumes(service: dict) -> dict[str, tuple[str, str]]:
    """volume -> (target, mode) of a service as `docker-compose config` prints it (`name:target:mode`)."""
    found = {}
    for entry in service.get("volumes", []):
        source, target, mode = (entry.split(":") + ["rw"])[:3]
        if not source.startswith(("/", ".")):
            found[source] = (target, mode)
    return found


def test_the_local_aws_server_runs_from_its_mounted_package(resolved):
    """compose runs the repository's local_aws package in moto's image: the folder is mounted
    read-only where `python -m local_aws` looks (the working directory)."""
    moto = resolved["services"]["moto"]
    assert moto["entrypoint"][:3] == ["python", "-m", "local_aws"]
    mounts = {target: (source, options) for source, target, *options in
              (volume.split(":") for volume in moto["volumes"])}
    source, options = mounts[f"{moto['working_dir'].rstrip('/')}/local_aws"]
    assert source.rstrip("/").endswith("local_aws") and options == ["ro"]
    assert (REPO / "local_aws" / "__main__.py").exists()


def test_every_service_that_reads_the_clinics_file_has_it_mounted(resolved, monkeypatch):
    """ingest, audio (each clinic's languages choose transcription) and results get the same
    file, mounted read-only where SCHIZODOT_CLINICS_FILE points; the default one is accepted."""
    readers = [stage for stage in STAGES if reads_clinics_file(stage)]
    assert {"ingest", "audio", "results"} <= set(readers)
    sources = set()
    for stage in readers:
        service = resolved["services"][stage]
        path = settings_from(SETTINGS[stage], service["environment"], monkeypatch).clinics_file
        assert path is not None, f"{stage} reads the clinics file, but compose gives it none"
        mounts = {target: (source, options) for source, target, *options in
                  (volume.split(":") for volume in service.get("volumes", []))}
        source, options = mounts[str(path)]
        assert options == ["ro"], stage
        sources.add(source)
    (source,) = sources  # the one file, relative to the compose file: deploy/clinics.json
    assert source.endswith("/deploy/clinics.json"), source
    check_clinics_file(REPO / "deploy" / "clinics.json")


def test_only_the_apis_are_published_beyond_this_machine_and_uploads_go_through_ingest(resolved, monkeypatch):
    """Issue 19, finding 1: the local AWS server is for this machine (loopback); phones and clinic apps
    send recordings to the ingest API (upload mode "proxy", docs/uploads.md), never to it."""
    from services.ingest.settings import IngestSettings

    beyond = {}
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):  # "127.0.0.1:4566:4566/tcp", or {published, target[, host_ip]}
            host = port.get("host_ip", "") if isinstance(port, dict) else (
                port.split(":")[0] if port.count(":") == 2 else "")
            if host != "127.0.0.1":
                beyond[name] = port
    assert set(beyond) == {"ingest", "results"}, beyond
    ingest = settings_from(IngestSettings, resolved["services"]["ingest"]["environment"], monkeypatch)
    assert ingest.upload_mode == "proxy"
