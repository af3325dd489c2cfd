"""docker-compose.yml, the file users run, started from the built images and
locked down as the Kubernetes manifests demand: every healthcheck passes, the
manifests' probes answer, a write outside /tmp fails, and one real check-in
goes through as users make one: tokens from compose's development issuer
(`docker compose run --rm dev-issuer token --user ...`), the check-in created by
the clinic's uploader and sent through the ingest API (the upload proxy), its result read through
the results API by the clinic's clinician (another clinic's sees nothing), the
audit trail read by the clinic's admin, and its trace through the OTLP endpoint
(read back with Jaeger's query API), with no patient id in any span.

Host ports are free ones unless SCHIZODOT_CHECK_AWS_PORT, _INGEST_PORT,
_RESULTS_PORT or _JAEGER_PORT name them; the project is `schizodot-check`, so a
stack of the user's own is left alone."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from schizodot import samples
from schizodot.dev_identity import DEV_CLINIC
from shared.domain.job import Job
from shared.identity.principal import patient_key
from shared.runtime.topology import STAGES
from tests.conftest import free_port
from tests.deploy.images.engine import TAG, docker
from tests.deploy.support import REPO, of_kind, rendered, tool

pytestmark = pytest.mark.images

PROJECT = "schizodot-check"
HEALTHY = ("moto", *STAGES)  # the services with a healthcheck (jaeger's image has none)
STACK_TIMEOUT = float(os.environ.get("SCHIZODOT_CHECK_STACK_TIMEOUT", "300"))
JOB_TIMEOUT = float(os.environ.get("SCHIZODOT_CHECK_JOB_TIMEOUT", "600"))


@dataclass
class ComposeStack:
    env: dict[str, str]
    ports: dict[str, int]
    timings: dict[str, float]
    tokens: dict[str, str] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([tool("docker-compose"), "-p", PROJECT, "-f", str(REPO / "docker-compose.yml"),
                                 *args], capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{result.stdout[-4000:]}\n"
                                 f"{result.stderr[-4000:]}")
        return result

    def container(self, service: str) -> str:
        container_id = self.compose("ps", "-q", service).stdout.strip()
        assert container_id, f"no container for {service}"
        return container_id

    def state(self, service: str) -> dict:
        return json.loads(docker("inspect", self.container(service)).stdout)[0]["State"]

    def exec(self, service: str, code: str) -> subprocess.CompletedProcess:
        return docker("exec", self.container(service), "python", "-c", code, check=False, timeout=60)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def auth(self, user: str) -> dict[str, str]:
        """A development user's bearer token, as a compose user gets one (docs/security.md, "Getting a token")."""
        if user not in self.tokens:
            started = time.monotonic()
            minted = self.compose("run", "--rm", "--no-deps", "-T", "dev-issuer", "token", "--user", user,
                                  timeout=120)
            self.tokens[user] = minted.stdout.strip().splitlines()[-1]
            self.timings[f"token {user}"] = time.monotonic() - started
        return {"Authorization": f"Bearer {self.tokens[user]}"}


def _port(name: str) -> int:
    return int(os.environ.get(f"SCHIZODOT_CHECK_{name.upper()}_PORT") or free_port())


@pytest.fixture(scope="module")
def stack(request) -> ComposeStack:
    ports = {name: _port(name) for name in ("aws", "ingest", "results", "jaeger")}
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
    env.update({
        "SCHIZODOT_IMAGE_TAG": TAG,
        "SCHIZODOT_AWS_HOST_PORT": str(ports["aws"]),
        "INGEST_API_HOST_PORT": str(ports["ingest"]),
        "RESULTS_API_HOST_PORT": str(ports["results"]),
        "JAEGER_UI_HOST_PORT": str(ports["jaeger"]),
        "SCHIZODOT_PSEUDONYM_KEY": secrets.token_hex(32),  # as a deployment sets them in .env
        "RESULTS_CONSOLE_CSRF_KEY": secrets.token_hex(32),
    })
    running = ComposeStack(env, ports, {})
    running.compose("down", "-v", "--remove-orphans", check=False)  # what a killed earlier run left
    started = time.monotonic()
    try:
        running.compose("up", "-d", "--no-build")
        running.timings["up"] = time.monotonic() - started
        _wait_until_healthy(running)
        running.timings["healthy"] = time.monotonic() - started
        print(f"\ncompose stack: `up` returned after {running.timings['up']:.0f} s, "
              f"all healthchecks passed after {running.timings['healthy']:.0f} s")
        failed_before = request.session.testsfailed
        yield running
        if request.session.testsfailed > failed_before:
            _print_logs(running)
    except BaseException:
        _print_logs(running)
        raise
    finally:
        stopping = time.monotonic()
        running.compose("down", "-v", "--remove-orphans", "-t", "30", check=False)
        print(f"compose stack: down in {time.monotonic() - stopping:.0f} s")


def _print_logs(running: ComposeStack) -> None:
    print(running.compose("logs", "--no-color", "--tail", "60", check=False).stdout[-20000:])


def _wait_until_healthy(running: ComposeStack) -> None:
    deadline = time.monotonic() + STACK_TIMEOUT
    while True:
        health = {service: running.state(service).get("Health", {}).get("Status") for service in HEALTHY}
        init = running.state("aws-init")
        issuer = running.state("dev-issuer")
        jaeger = running.state("jaeger")
        for name, step in (("aws-init", init), ("dev-issuer", issuer)):
            if step["Status"] == "exited" and step["ExitCode"] != 0:
                raise AssertionError(f"{name} failed (exit {step['ExitCode']})")
        looping = [s for s in HEALTHY if json.loads(docker("inspect", running.container(s)).stdout)[0]
                   ["RestartCount"] >= 3]
        if looping:
            raise AssertionError(f"restarting again and again: {looping} (their logs follow)")
        if all(status == "healthy" for status in health.values()) and init["Status"] == "exited" \
                and issuer["Status"] == "exited" and jaeger["Status"] == "running":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not healthy after {STACK_TIMEOUT:.0f} s: {health}, aws-init {init['Status']}, "
                                 f"dev-issuer {issuer['Status']}, jaeger {jaeger['Status']}")
        time.sleep(2)


def test_containers_run_locked_down_as_the_manifests_demand(stack):
    pods = {name: doc["spec"]["template"]["spec"] for name, doc in of_kind(rendered("dev"), "Deployment").items()}
    for service in STAGES:
        host = json.loads(docker("inspect", stack.container(service)).stdout)[0]["HostConfig"]
        assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        pod = pods[f"schizodot-{service}"]["securityContext"]
        ids = stack.exec(service, "import os; print(os.getuid(), os.getgid())")
        assert ids.stdout.split() == [str(pod["runAsUser"]), str(pod["runAsGroup"])], service
        outside = stack.exec(service, "open('/app/probe', 'w')")
        assert outside.returncode != 0 and "Read-only file system" in outside.stderr, service
        inside = stack.exec(service, "open('/tmp/probe', 'w').write('x')")
        assert inside.returncode == 0, inside.stderr


def test_the_manifests_probes_answer_in_the_running_containers(stack):
    for name, deployment in of_kind(rendered("dev"), "Deployment").items():
        service = name.removeprefix("schizodot-")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            if "httpGet" in probe:
                port = ports.get(probe["httpGet"]["port"], probe["httpGet"]["port"])
                code = ("import urllib.request; print(urllib.request.urlopen("
                        f"'http://127.0.0.1:{port}{probe['httpGet']['path']}', timeout=5).status)")
            else:
                port = ports.get(probe["tcpSocket"]["port"], probe["tcpSocket"]["port"])
                code = f"import socket; socket.create_connection(('127.0.0.1', {port}), 5).close(); print(200)"
            answered = stack.exec(service, code)
            assert answered.stdout.strip() == "200", f"{name} {kind}: {answered.stderr[-500:]}"


def test_a_checkin_goes_through_the_upload_proxy_to_the_results_api_and_traces(stack, tmp_path: Path):
    clip = samples.checkin_video(tmp_path / "checkin.mp4", seconds=6.0,
                                 text="Good morning. I feel fine today and I took my tablet.")
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    uploader, clinician = stack.auth("dev-uploader"), stack.auth("dev-clinician")
    started = time.monotonic()
    with httpx.Client(timeout=30) as http:
        checkin = {"patient_id": patient, "filename": clip.name, "content_type": "video/mp4"}
        analyze = f"{stack.url('ingest')}/api/v1/analyze"
        assert http.post(analyze, json=checkin).status_code == 401
        created = http.post(analyze, json=checkin, headers=uploader)
        assert created.status_code == 201, created.text
        job = created.json()
        # The upload proxy (docs/uploads.md): the file goes to the ingest API, never to the AWS server.
        assert job["upload_method"] == "PUT"
        assert job["upload_url"] == f"{stack.url('ingest')}/api/v1/uploads/{job['job_id']}"
        uploaded = http.put(job["upload_url"], content=clip.read_bytes(),
                            headers={**uploader, "Content-Type": "video/mp4"})
        assert uploaded.status_code == 201, uploaded.text

        results = stack.url("results")
        status_url = f"{results}/api/v1/jobs/{job['job_id']}"
        assert http.get(status_url).status_code == 401
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            status = http.get(status_url, headers=clinician)
            assert status.status_code == 200, status.text
            if status.json()["status"] in ("completed", "failed") or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert status.json()["status"] == "completed", status.json()
        print(f"check-in: uploaded and completed in {time.monotonic() - started:.1f} s")

        result = http.get(f"{results}/api/v1/results/{job['job_id']}", headers=clinician)
        assert result.status_code == 200, result.text
        item = result.json()
        assert (item["user_id"], item["job_id"]) == (patient, job["job_id"])  # the clinic's own patient id
        facial = item["results"]["facial_emotion"]
        assert facial["face_detected"] is True and facial["frame_count"] > 0  # MediaPipe ran in the image
        # The ensemble ran: fer's network and face-api's, converted at build time and baked into the image.
        assert "fer" in facial["method"] and "face-api" in facial["method"], facial["method"]
        assert "face_expression.onnx" in facial["models"], facial["models"]
        assert "audio_emotion" in item["results"]
        # Another clinic's clinician: exactly what a job that does not exist looks like.
        elsewhere = http.get(f"{results}/api/v1/results/{job['job_id']}", headers=stack.auth("other-clinician"))
        missing = http.get(f"{results}/api/v1/results/job-000000000000", headers=stack.auth("other-clinician"))
        assert elsewhere.status_code == missing.status_code == 404
        assert elsewhere.json()["detail"] == missing.json()["detail"].replace("job-000000000000", job["job_id"])

        # The audit trail (aws-init made its bucket under Object Lock) has the creation and the reads.
        audit = http.get(f"{results}/api/v1/audit", params={"patient_id": patient}, headers=stack.auth("dev-admin"))
        assert audit.status_code == 200, audit.text
        actions = [record["action"] for record in audit.json()["records"]]
        assert "checkin.create" in actions and len(actions) >= 3, actions

        detail = http.get(f"{results}/api/v1/jobs/{job['job_id']}/detail", headers=clinician).json()
        trace_id = Job.from_item(detail["job"]).pipeline.trace_id
        jaeger = stack.url("jaeger")
        # one consumer span per stage (the stage's work inside it) and the API request that began the job
        expected = {f"process schizodot-{s}" for s in STAGES} | {"POST /api/v1/analyze"}
        deadline = time.monotonic() + 60
        while True:  # each service exports in batches on its own schedule
            traces = http.get(f"{jaeger}/api/traces/{trace_id}").json()["data"]
            spans = [span for trace in traces for span in trace["spans"]]
            operations = {span["operationName"] for span in spans}
            if operations >= expected or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert operations >= expected, f"missing spans: {expected - operations}"
        services = {process["serviceName"] for trace in traces for process in trace["processes"].values()}
        assert services >= {f"schizodot-{s}" for s in STAGES}, services
        stored = patient_key(DEV_CLINIC, patient)
        assert not [span for span in spans if patient in json.dumps(span) or stored in json.dumps(span)], \
            "a span carries the patient id"
    print("tokens from the dev-issuer step: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds
                                                         in stack.timings.items() if name.startswith("token")))
