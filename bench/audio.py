"""Real-time factor of the audio stage, with and without the Whisper transcript.

    python -m bench.audio [--lengths 30 300] [--repeats 1]

For each length it makes an M4A (AAC) check-in of espeak-ng speech (a few
sentences with pauses, repeated) and runs the worker's own path, extract_audio +
AudioAnalyser (main.make_analyse), once without and once with the transcript,
side by side in one run. RTF = processing seconds / seconds of audio (lower is
faster; targets on 2 CPU cores: <= 0.05 without transcript, <= 0.3 with).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from services.audio.analysis import AudioAnalyser
from services.audio.main import make_analyse
from services.audio.transcript import WhisperTranscriber

SENTENCES = (
    "Good morning. I took my medication today, with breakfast, like every day.",
    "I slept about seven hours last night, and I woke up once.",
    "The voices were quieter this week. I went for a walk on Sunday with my sister.",
    "I feel a bit tired in the afternoons, but my appetite is fine.",
)


def make_checkin(dest: Path, seconds: float) -> Path:
    """espeak-ng sentences separated by 0.8 s pauses, looped to `seconds`, as AAC in M4A."""
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for i, text in enumerate(SENTENCES):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-s", str(150 + 10 * i), "-w", str(wav), text], check=True, capture_output=True)
            parts.append(wav)
        inputs = [arg for wav in parts for arg in ("-i", str(wav))]
        chain = "".join(f"[{i}:a]apad=pad_dur=0.8[a{i}];" for i in range(len(parts)))
        joined = "".join(f"[a{i}]" for i in range(len(parts)))
        graph = f"{chain}{joined}concat=n={len(parts)}:v=0:a=1,aloop=loop=-1:size=2e6[out]"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[out]",
             "-t", str(seconds), "-ac", "1", "-ar", "44100", "-c:a", "aac", "-b:a", "96k", str(dest)],
            check=True, capture_output=True,
        )
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=float, nargs="+", default=[30.0, 300.0], help="seconds of audio")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case (median reported)")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--threads", type=int, default=2, help="Whisper CPU threads (AUDIO_MODEL_THREADS)")
    args = parser.parse_args()

    vad = args.models / "silero_vad.onnx"
    plain = make_analyse(AudioAnalyser(vad), 16000)
    transcriber = WhisperTranscriber(args.models / "whisper-tiny.en", threads=args.threads)
    with_text = make_analyse(AudioAnalyser(vad, transcriber=transcriber), 16000)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        for seconds in args.lengths:
            media = make_checkin(Path(tmp) / f"checkin-{seconds:g}s.m4a", seconds)
            plain(media, lambda *_: None)  # warm-up (first-call allocations, page cache)
            row = {"seconds": seconds}
            for name, analyse in (("without", plain), ("with", with_text)):
                times = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    result = analyse(media, lambda *_: None)
                    times.append(time.perf_counter() - started)
                row[name] = statistics.median(times)
                row[f"{name}_rtf"] = row[name] / result["duration_seconds"]
                if name == "with":
                    row["words"] = sum(len(s["words"]) for s in result["transcript"]["segments"])
            rows.append(row)

    cores = len(os.sched_getaffinity(0))
    print(f"audio stage real-time factor (processing s / audio s), {cores} CPU cores, median of {args.repeats}")
    print(f"{'audio':>8} | {'no transcript':>20} | {'with transcript':>20} | {'words':>6}")
    print(f"{'-' * 8}-+-{'-' * 20}-+-{'-' * 20}-+-{'-' * 6}")
    for r in rows:
        print(f"{r['seconds']:>7g}s | {r['without']:>7.2f} s  RTF {r['without_rtf']:.3f} | "
              f"{r['with']:>7.2f} s  RTF {r['with_rtf']:.3f} | {r['words']:>6}")
    print("targets: RTF <= 0.05 without transcript, <= 0.3 with")
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "audio.json").write_text(json.dumps({"cores": cores, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
