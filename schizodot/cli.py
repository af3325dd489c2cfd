"""`schizodot`: submit a check-in as a clinic app would and read a patient's history.

    schizodot submit PATH --patient-id ID [--analyses audio,vision,transcript] [--threshold NAME=VALUE]
                     [--timeline FILE] [--json]
    schizodot jobs --patient-id ID [--limit N] [--status S]
    schizodot results --patient-id ID [--limit N] [--json]
    schizodot token --user dev-clinician          # a signed token from the embedded stack's issuer

Talks to the ingest API (SCHIZODOT_API_URL) and the results API
(SCHIZODOT_RESULTS_API_URL) with a credential: `--token` or SCHIZODOT_TOKEN (a
bearer token from your OIDC provider), or, with the embedded stack, a token its
development issuer signs for `--user` (default dev-uploader to submit,
dev-clinician to read). With no AWS_ENDPOINT_URL set and the embedded stack
running in this folder, it uses the embedded stack.

A server that restarts is waited for: connection errors and 429/502/503/504 are
retried with back-off until --retry-deadline (default
$SCHIZODOT_CLIENT_RETRY_DEADLINE or 120 s); the job is followed throughout.

Exit codes:
  0  done (submit: the job completed)
  1  the job failed; its error is printed
  2  bad usage or input refused (no such file, no credential, the API answered 4xx)
  3  a service stayed unreachable beyond the retry deadline
  4  the job was still running at --timeout (follow it with `schizodot jobs`)
  70 an unexpected error (SCHIZODOT_DEBUG=1 shows the traceback)
  130 interrupted
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schizodot import stack
from schizodot.dev_identity import USERS, DevIssuer
from schizodot.resilience import RetryPolicy, ServiceUnreachable, describe, http_request
from schizodot.result_view import history_table, result_table
from schizodot.upload import send_recording
from shared.domain.findings import ResultItem

console = Console(stderr=True)
# Piped output keeps whole ids and timestamps rather than rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)

_TYPES = {".m4a": "audio/mp4", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".mov": "video/quicktime",
          ".avi": "video/x-msvideo", ".mpeg": "video/mpeg", ".mpg": "video/mpeg", ".mp4": "video/mp4",
          ".webm": "video/webm"}

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_STILL_RUNNING = 0, 1, 2, 3, 4
EXIT_INTERNAL, EXIT_INTERRUPTED = 70, 130


def _use_embedded_stack_if_running() -> None:
    if os.environ.get("AWS_ENDPOINT_URL"):
        return
    saved = stack.DEFAULT_STATE_DIR / "config.json"
    if saved.exists():
        config = stack.StackConfig.from_json(saved.read_text())
        if stack.is_running(config):
            config.use_in_this_process()


def _api_url(args: argparse.Namespace) -> str:
    return (args.api_url or os.environ.get("SCHIZODOT_API_URL") or "http://127.0.0.1:8080").rstrip("/")


def _results_url(args: argparse.Namespace) -> str:
    return (args.results_api_url or os.environ.get("SCHIZODOT_RESULTS_API_URL") or "http://127.0.0.1:8081").rstrip("/")


class NoCredential(Exception):
    pass


def _dev_issuer() -> DevIssuer | None:
    state = os.environ.get("SCHIZODOT_STACK_STATE_DIR") or str(stack.DEFAULT_STATE_DIR)
    issuer = DevIssuer(Path(state))
    return issuer if issuer.jwks_path.exists() else None


def _auth(args: argparse.Namespace, default_user: str) -> dict[str, str]:
    """The Authorization header: --token / SCHIZODOT_TOKEN, else the embedded stack's dev issuer."""
    token = args.token or os.environ.get("SCHIZODOT_TOKEN")
    if not token:
        issuer = _dev_issuer()
        if issuer is None:
            raise NoCredential("no credential: pass --token or set SCHIZODOT_TOKEN (a bearer token from your "
                               "identity provider); the embedded stack's users need the stack started here")
        token = issuer.mint(args.user or default_user)
    return {"Authorization": f"Bearer {token}"}


def token(args: argparse.Namespace) -> int:
    issuer = _dev_issuer()
    if issuer is None:
        return _fail("no embedded stack here: start it (`make up`) or get a token from your identity provider",
                     EXIT_USAGE)
    if args.user not in USERS:
        return _fail(f"no development user {args.user!r}; choose one of {', '.join(USERS)}", EXIT_USAGE)
    print(issuer.mint(args.user, lifetime=args.lifetime))
    return EXIT_OK


def _fail(message: str, code: int = EXIT_JOB_FAILED) -> int:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return code


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text


def submit(args: argparse.Namespace) -> int:
    path: Path = args.path
    if not path.is_file():
        return _fail(f"{path} is not a file", EXIT_USAGE)
    content_type = args.content_type or _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or ""
    if any("=" not in item for item in args.metadata):
        return _fail("--metadata takes KEY=VALUE", EXIT_USAGE)
    metadata = dict(item.split("=", 1) for item in args.metadata)
    try:
        options = checkin_options(args.analyses, args.threshold)
        timeline = checkin_timeline(args.timeline) if args.timeline else None
    except ValueError as error:
        return _fail(str(error), EXIT_USAGE)
    api = _api_url(args)
    policy: RetryPolicy = args.policy
    try:
        uploader, reader = _auth(args, "dev-uploader"), _auth(args, "dev-clinician")
    except NoCredential as error:
        return _fail(str(error), EXIT_USAGE)
    with httpx.Client(timeout=60) as http:
        # The key makes a retried POST (its answer lost to a restart) return the same job, not a second one.
        created = http_request(http, "POST", f"{api}/api/v1/analyze", policy=policy, what="creating the job",
                               headers={**uploader, "Idempotency-Key": str(uuid.uuid4())}, json={
                                   "patient_id": args.patient_id, "filename": path.name,
                                   "content_type": content_type, "metadata": metadata, "options": options,
                                   **({"timeline": timeline} if timeline else {})})
        if created.status_code not in (200, 201):
            return _fail(f"the check-in was refused ({created.status_code}): {_detail(created)}", EXIT_USAGE)
        job = created.json()
        job_id = job["job_id"]
        trace = job.get("trace_id") or "(tracing off)"
        console.print(f"job [bold]{job_id}[/] created (trace id {trace}); "
                      f"uploading {path.name} ({path.stat().st_size / 1024:.0f} KiB)")
        # A PUT to the ingest API, or the presigned POST, whose signature S3 checks the size and type
        # against (docs/uploads.md). Sending the same bytes again is safe: a 409 is checked against the
        # check-in's state (received already, or another try still being sent), and nothing is replaced.
        sent = send_recording(http, job, path.name, path.read_bytes(), content_type, uploader,
                              status_url=f"{api}/api/v1/jobs/{job_id}", policy=policy)
        if not sent.ok:
            return _fail(f"upload failed ({sent.response.status_code}): {_detail(sent.response)[:300]}", EXIT_USAGE)
        if sent.received_before:
            console.print("the recording had already arrived (an earlier try's answer was lost); following the job")
        status = _follow(http, api, job_id, args.timeout, policy, uploader)
        item = None
        if status is not None and status["status"] == "completed":
            answer = http_request(http, "GET", f"{_results_url(args)}/api/v1/results/{job_id}", policy=policy,
                                  what="reading the result", headers=reader)
            item = answer.json() if answer.status_code == 200 else None
    if status is None:
        return _fail(f"job {job_id} did not finish within {args.timeout:.0f} s; follow it with `schizodot jobs`",
                     EXIT_STILL_RUNNING)
    if status["status"] == "failed":
        return _fail(f"job {job_id} failed: {status.get('error')}")
    if args.json:
        out.print_json(json.dumps(item))
    elif item is None:
        out.print(f"job {status['job_id']} completed: {status.get('results')}")
    else:
        out.print(result_table(ResultItem.model_validate(item)))
    return EXIT_OK


def checkin_timeline(path: Path) -> list[dict[str, Any]]:
    """--timeline FILE: when each prompt and dosing step was shown (a JSON list of shared.domain.timeline's
    entries), checked here as the API checks it."""
    from pydantic import ValidationError

    from shared.domain.timeline import CheckinTimeline

    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
        return CheckinTimeline.model_validate({"entries": entries}).stored()
    except (OSError, ValueError) as error:  # ValidationError is a ValueError
        detail = ("; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'timeline'}: {e['msg'].removeprefix('Value error, ')}"
                            for e in error.errors()) if isinstance(error, ValidationError) else str(error))
        raise ValueError(f"--timeline {path}: {detail}") from None


def checkin_options(analyses: str | None, thresholds: list[str]) -> dict[str, Any]:
    """--analyses audio,vision,transcript and --threshold NAME=VALUE as the API's `options`
    (shared.domain.options checks them here too, so a mistake is caught before anything is sent)."""
    from pydantic import ValidationError

    from shared.domain.options import CheckinOptions

    chosen: dict[str, Any] = {}
    if analyses is not None:
        chosen["analyses"] = [a.strip() for a in analyses.split(",") if a.strip()]
    if any("=" not in item for item in thresholds):
        raise ValueError("--threshold takes NAME=VALUE, e.g. baseline_window=5")
    if thresholds:
        chosen["thresholds"] = {name.strip(): value.strip() for name, value in (t.split("=", 1) for t in thresholds)}
    try:
        return CheckinOptions.model_validate(chosen).stored()
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in error.errors())
        raise ValueError(f"invalid check-in options: {problems}") from None


def _follow(http: httpx.Client, api: str, job_id: str, timeout: float, policy: RetryPolicy,
            headers: dict[str, str]) -> dict[str, Any] | None:
    """Poll the job until it ends. Piped output gets one line per change of
    progress, so logs keep the job's progress history."""
    deadline = time.monotonic() + timeout
    lines = not console.is_terminal
    with Progress(TextColumn("[bold]{task.fields[state]:<10}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                  disable=lines) as bar:
        task = bar.add_task("waiting for the upload", total=100, state="queued")
        last: tuple = ()
        while time.monotonic() < deadline:
            response = http_request(http, "GET", f"{api}/api/v1/jobs/{job_id}", policy=policy,
                                    what="following the job", headers=headers)
            if response.status_code != 200:
                raise ServiceUnreachable(f"following the job: the ingest API answered {response.status_code}: "
                                         f"{_detail(response)}")
            status = response.json()
            bar.update(task, completed=status["progress"], description=status.get("message") or "",
                       state=status["status"])
            now = (status["progress"], status["status"], status.get("message"))
            if lines and now != last:
                console.print(f"  {time.strftime('%H:%M:%S')} progress {status['progress']:>3}% "
                              f"{status['status']}: {status.get('message') or ''}", highlight=False, soft_wrap=True)
            elif status.get("message") and status.get("message") != (last[2] if last else None):
                bar.console.print(f"  [dim]{time.strftime('%H:%M:%S')}[/] {status['message']}", highlight=False)
            last = now
            if status["status"] in ("completed", "failed"):
                return status
            time.sleep(0.5)
    return None


def _read(args: argparse.Namespace, path: str, params: dict[str, Any]) -> Any:
    """GET from the results API as the reader; raises SystemExit with the reason on refusal."""
    try:
        headers = _auth(args, "dev-clinician")
    except NoCredential as error:
        raise SystemExit(_fail(str(error), EXIT_USAGE)) from error
    with httpx.Client(timeout=30) as http:
        response = http_request(http, "GET", f"{_results_url(args)}{path}", policy=args.policy,
                                what="reading the results API", params=params, headers=headers)
    if response.status_code != 200:
        raise SystemExit(_fail(f"the results API refused ({response.status_code}): {_detail(response)}", EXIT_USAGE))
    return response.json()


def jobs(args: argparse.Namespace) -> int:
    params = {"limit": args.limit, **({"status_filter": args.status} if args.status else {})}
    found = _read(args, f"/api/v1/patients/{args.patient_id}/jobs", params)["jobs"]
    if args.json:
        out.print_json(json.dumps(found))
        return 0
    table = Table(title=f"Jobs of {args.patient_id}, newest first")
    for column in ("job_id", "created_at", "status", "progress", "message"):
        table.add_column(column)
    for job in found:
        table.add_row(job["job_id"], job["created_at"], job["status"], str(job.get("progress", 0)),
                      job.get("error") or job.get("message") or "")
    out.print(table)
    return 0


def results(args: argparse.Namespace) -> int:
    found = _read(args, f"/api/v1/patients/{args.patient_id}/results", {"limit": args.limit})["results"]
    if args.json:
        out.print_json(json.dumps(found))
        return 0
    out.print(history_table(args.patient_id, [ResultItem.model_validate(item) for item in found]))
    return 0


def pills(args: argparse.Namespace) -> int:
    """`pills train|status --clinic C`: the clinic's own pill detector (services/vision/training/clinic.py).
    Reads and writes the clinic's labelled frames in S3 directly (AWS_ENDPOINT_URL for the embedded stack)."""
    import asyncio

    from shared.aws.clients import AsyncClients
    from shared.aws.pill_labels import Gate, PillLabels
    from shared.aws.storage import Storage
    from shared.settings import CommonSettings

    async def run() -> dict[str, Any] | None:
        settings = CommonSettings()
        async with AsyncClients(settings) as clients:
            store = PillLabels(Storage(clients.s3, settings.bucket))
            if args.pills_command == "status":
                record = await store.record(args.clinic)
                return record.results_block() if record else None
            from services.vision.training.clinic import train_clinic

            gate = Gate(min_precision=args.min_precision, min_recall=args.min_recall, min_frames=args.min_frames)
            record = await train_clinic(store, args.clinic, gate=gate, epochs=args.epochs, imgsz=args.imgsz,
                                        device=args.device)
            return record.results_block()

    try:
        block = asyncio.run(run())
    except ValueError as error:
        return _fail(str(error))
    if block is None:
        return _fail(f"clinic {args.clinic!r} has no pill detector yet (run `schizodot pills train --clinic ...`)")
    print(json.dumps(block, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="schizodot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-url", default=None, help="ingest API (default $SCHIZODOT_API_URL or http://127.0.0.1:8080)")
    parser.add_argument("--results-api-url", default=None,
                        help="results API (default $SCHIZODOT_RESULTS_API_URL or http://127.0.0.1:8081)")
    parser.add_argument("--token", default=None, help="bearer token (default $SCHIZODOT_TOKEN)")
    parser.add_argument("--user", default=None, help="embedded stack only: act as this development user")
    parser.add_argument("--retry-deadline", type=float, default=None, metavar="SECONDS",
                        help="how long transient failures are retried before giving up "
                             "(default $SCHIZODOT_CLIENT_RETRY_DEADLINE or 120)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("submit", help="upload a check-in, follow it, print the result")
    p.add_argument("path", type=Path)
    p.add_argument("--patient-id", required=True)
    p.add_argument("--content-type", default=None)
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--json", action="store_true", help="print the SchizodotUsers item as JSON")
    p.add_argument("--analyses", default=None, metavar="LIST",
                   help="analyses for this check-in, of audio,vision,transcript (default: the deployment's)")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="a fusion threshold for this check-in: baseline_window, baseline_min_checkins, "
                        "missed_medication_streak")
    p.add_argument("--timeline", type=Path, default=None, metavar="FILE",
                   help="when each prompt and dosing step was shown: a JSON list of {step_id, kind, shown_at_ms} "
                        "(per-question markers and dosing windows need it)")
    p.set_defaults(run=submit)
    p = sub.add_parser("jobs", help="a patient's jobs, newest first")
    p.add_argument("--patient-id", required=True)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--status", choices=["queued", "processing", "completed", "failed"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=jobs)
    p = sub.add_parser("results", help="a patient's latest results, newest first")
    p.add_argument("--patient-id", required=True)
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=results)
    p = sub.add_parser("pills", help="a clinic's own pill detector: train it on reviewed frames, or its status")
    pills_sub = p.add_subparsers(dest="pills_command", required=True)
    for name, help_text in (("train", "train on the clinic's reviewed frames, validate on a held-out split"),
                            ("status", "the clinic's detector: version, validation figures, live or off")):
        q = pills_sub.add_parser(name, help=help_text)
        q.add_argument("--clinic", required=True)
        q.set_defaults(run=pills)
        if name == "train":
            q.add_argument("--epochs", type=int, default=60)
            q.add_argument("--imgsz", type=int, default=640)
            q.add_argument("--device", default="auto")
            q.add_argument("--min-precision", type=float, default=0.95)
            q.add_argument("--min-recall", type=float, default=0.90)
            q.add_argument("--min-frames", type=int, default=200)
    for name in ("token", "login"):
        p = sub.add_parser(name, help="print a signed token for a development user of the embedded stack")
        p.add_argument("--user", required=True, choices=sorted(USERS))
        p.add_argument("--lifetime", type=int, default=3600, help="seconds")
        p.set_defaults(run=token)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.policy = RetryPolicy.from_env(args.retry_deadline)
        _use_embedded_stack_if_running()
        return args.run(args)
    except ServiceUnreachable as error:
        return _fail(str(error), EXIT_UNREACHABLE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as error:  # a bug: one line for people, the traceback on request
        if os.environ.get("SCHIZODOT_DEBUG"):
            raise
        return _fail(f"unexpected error ({describe(error)}); run with SCHIZODOT_DEBUG=1 for the traceback",
                     EXIT_INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
