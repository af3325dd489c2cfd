"""Benchmark: N check-ins through the running embedded stack.

Reports medians of per-stage compute time (from each stage's own timing on the
job item), end-to-end latency (upload finished -> job completed) and the fabric
overhead: end to end minus the sum of stage compute, and minus the critical path
(audio and vision run side by side, so only the slower one is on it).

    make bench N=5            # or: python -m bench.pipeline --checkins 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime
from pathlib import Path

import httpx

from schizodot import samples, stack
from schizodot.dev_identity import DevIssuer
from schizodot.upload import upload_arguments
from shared.aws import sync_client
from shared.dynamo import from_item
from shared.job import Job
from shared.settings import CommonSettings

STAGES = ("ingest", "audio", "vision", "fusion")


def _parse(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run(checkins: int, seconds: float, config: stack.StackConfig) -> dict:
    clip = samples.checkin_video(samples.cache_dir() / "bench" / f"checkin_{seconds:.0f}s.mp4", seconds=seconds)
    settings = CommonSettings(aws_endpoint_url=config.endpoint, aws_region="us-east-1")
    dynamodb = sync_client(settings, "dynamodb")
    rows = []
    token = DevIssuer(config.state_dir).mint("dev-uploader", lifetime=24 * 3600)
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"}) as http:
        for index in range(checkins):
            answer = http.post(f"{config.api_url}/api/v1/analyze", json={
                "patient_id": "bench-patient", "filename": clip.name, "content_type": "video/mp4"})
            answer.raise_for_status()
            created = answer.json()
            upload = upload_arguments(created, clip.name, clip.read_bytes(), "video/mp4", {})
            (http if upload["method"] == "PUT" else httpx).request(**upload, timeout=60).raise_for_status()
            uploaded_at = time.time()
            while True:
                job = from_item(dynamodb.get_item(TableName=settings.jobs_table, ConsistentRead=True,
                                                  Key={"job_id": {"S": created["job_id"]}})["Item"])
                if job["status"] in ("completed", "failed"):
                    break
                time.sleep(0.05)
            if job["status"] != "completed":
                raise SystemExit(f"check-in {index} failed: {job.get('error')}")
            stages = Job.from_item(job).pipeline.stages
            compute = {s: stages[s].outputs.compute_seconds for s in STAGES}
            end_to_end = _parse(job["completed_at"]) - uploaded_at
            critical = compute["ingest"] + max(compute["audio"], compute["vision"]) + compute["fusion"]
            rows.append({"end_to_end": end_to_end, **compute, "overhead_vs_sum": end_to_end - sum(compute.values()),
                         "overhead_vs_critical_path": end_to_end - critical})
            print(f"check-in {index + 1}/{checkins}: {end_to_end:.2f} s end to end", flush=True)
    return {"checkins": checkins, "clip_seconds": seconds,
            "median_seconds": {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkins", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each check-in clip")
    parser.add_argument("--out", type=Path, default=Path("bench/results/pipeline.json"))
    args = parser.parse_args()
    config = stack.config_from_env()
    started_here = not stack.is_running(config)
    stack.up(config)
    config.use_in_this_process()
    try:
        report = run(args.checkins, args.seconds, config)
    finally:
        if started_here:
            stack.down(config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
