"""SchizodotUsers items shaped as issue 10 stores them (helpers/CONTRACT-10.md),
for the console, export and alert tests. Values drift over the check-ins and
each marker carries the baseline block fusion computes from the ones before it.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.domain.findings import ResultItem
from shared.domain.markers import Baseline, Marker
from shared.domain.patients import PatientKey
from shared.domain.stored_results import stored_result

VOCAL = {  # name: (unit, method, start, drift per check-in)
    "speaking_fraction": ("%", "silero-vad 6.2.3", 62.0, -1.0),
    "pause_rate": ("per min", "silero-vad 6.2.3", 11.0, 0.4),
    "speech_rate": ("syllables per min", "praat-parselmouth 0.4.7 syllable nuclei", 210.0, -6.0),
    "pitch_mean": ("Hz", "praat-parselmouth 0.4.7", 180.0, 0.5),
    "pitch_variability": ("semitones", "praat-parselmouth 0.4.7", 2.6, -0.08),
    "intensity": ("dB", "praat-parselmouth 0.4.7", 62.0, 0.0),
}
VIDEO = {
    "facial_expressivity": ("blendshape activity (0-1)", "mediapipe face_landmarker blendshapes", 0.08, -0.004),
    "positive_expression_share": ("%", "fer 25.10.3 tflite + face-api", 24.0, -1.0),
    "head_movement": ("deg/s", "mediapipe face_landmarker transformation matrix", 6.0, 0.1),
    # never happy in any check-in: a baseline mean of 0, so no relative change (as fusion leaves it out)
    "happy_share": ("%", "fer 25.10.3 tflite + face-api", 0.0, 0.0),
}
NOT_ASSESSED = {"jitter": ("%", "praat-parselmouth 0.4.7", "the voice was too quiet to measure jitter reliably")}


def _marker(value: float, unit: str, method: str, earlier: list[float]) -> dict[str, Any]:
    if len(earlier) < 3:
        baseline = Baseline(available=False, checkins=len(earlier),
                            reason=f"{len(earlier)} earlier check-ins; a baseline needs 3")
    else:
        mean = statistics.fmean(earlier)
        sd = statistics.pstdev(earlier) or abs(mean) * 0.05 or 1.0
        z = (value - mean) / sd
        baseline = Baseline(available=True, checkins=len(earlier), mean=round(mean, 3), sd=round(sd, 3),
                            z_score=round(z, 2), relative_change=round((value - mean) / abs(mean), 3) if mean else None,
                            notable=abs(z) >= 2, direction="lower" if z < 0 else "higher")
    return Marker(assessed=True, value=round(value, 3), unit=unit, method=method,
                  baseline=baseline).as_dict()


def history(patient_id: str, clinic_id: str, count: int = 8, start: datetime | None = None,
            days_apart: int = 2, statuses: list[str] | None = None, risks: list[str] | None = None,
            transcript: str = "I slept badly and I feel tired.", flags: list[Any] | None = None,
            metadata: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`count` items oldest first; the last check-in drops sharply (a decline from baseline)."""
    start = start or datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc)
    items: list[dict[str, Any]] = []
    seen: dict[str, list[float]] = {}
    for i in range(count):
        when = start + timedelta(days=i * days_apart, minutes=7 * i)
        last = i == count - 1
        wobble = math.sin(i * 1.7)
        vocal, video = {}, {}
        for group, table in ((vocal, VOCAL), (video, VIDEO)):
            for name, (unit, method, base, drift) in table.items():
                value = base + drift * i + wobble * abs(base) * 0.02
                if last and name in ("speech_rate", "facial_expressivity", "pitch_variability"):
                    value = base * 0.55
                group[name] = _marker(value, unit, method, seen.get(name, []))
                seen.setdefault(name, []).append(value)
        for name, (unit, method, reason) in NOT_ASSESSED.items():
            vocal[name] = Marker(assessed=False, unit=unit, method=method, reason=reason).as_dict()
        status = (statuses or [])[i] if statuses and i < len(statuses) else "inconclusive"
        risk = (risks or [])[i] if risks and i < len(risks) else ("moderate" if last else "low")
        items.append(result_item(patient_id, clinic_id, when, f"job-{patient_id[-3:]}{i:09x}"[-16:], vocal, video,
                                 status, risk, transcript, flags if last else [], metadata or {}))
    return items


def as_stored(items: list[dict[str, Any]]) -> list[ResultItem]:
    """Items in the clinic's view as the results service reads them back: under the patient key, parsed."""
    return [stored_result({**{k: v for k, v in item.items() if k != "clinic_id"},
                           "user_id": PatientKey.of(item["clinic_id"], item["user_id"])}) for item in items]


SEED_BLOCKS = ("audio_emotion", "facial_emotion", "compliance", "multimodal_fusion", "clinical_summary")


def checkin(results: dict[str, Any]) -> ResultItem:
    """One check-in as read back whose `results` are the seed's five blocks (a contract item's) with
    `results` over them: only what a test gives beyond the blocks every item has."""
    [base] = history("patient-101", "clinic-north", 1)
    return as_stored([{**base, "results": {**{k: base["results"][k] for k in SEED_BLOCKS}, **results}}])[0]


def result_item(patient_id: str, clinic_id: str, when: datetime, job_id: str, vocal: dict, video: dict,
                status: str, risk: str, transcript: str, flags: list[Any], metadata: dict[str, Any]) -> dict[str, Any]:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    job_id = "job-" + job_id.removeprefix("job-").rjust(12, "0")[-12:]
    steps = [
        {"step": "face_in_view", "observed": True, "first_seen_s": 0.0, "confidence": 1.0, "note": "a face",
         "evidence_frame": f"artifacts/{job_id}/evidence/face_in_view.jpg"},
        {"step": "hand_in_view", "observed": True, "first_seen_s": 2.1, "confidence": 0.9, "note": "a hand",
         "evidence_frame": f"artifacts/{job_id}/evidence/hand_in_view.jpg"},
        {"step": "pill_visible", "observed": False, "first_seen_s": None, "confidence": None,
         "note": "not assessed: no pill detector configured", "evidence_frame": None},
        {"step": "hand_to_mouth", "observed": True, "first_seen_s": 2.6, "confidence": 0.8,
         "note": "a fingertip within 0.20 face widths of the lips",
         "evidence_frame": f"artifacts/{job_id}/evidence/hand_to_mouth.jpg"},
        {"step": "mouth_open", "observed": False, "first_seen_s": None, "confidence": None,
         "note": "jawOpen at or above 0.30", "evidence_frame": None},
        {"step": "pill_in_mouth", "observed": False, "first_seen_s": None, "confidence": None,
         "note": "not assessed: no pill detector configured", "evidence_frame": None},
        {"step": "mouth_empty_after", "observed": False, "first_seen_s": None, "confidence": None,
         "note": "not assessed: no pill detector configured", "evidence_frame": None},
    ]
    words = transcript.split()
    results_answers = answers_block(words, earlier_latencies=[1.1, 1.3, 1.2, 1.25])
    return {
        "user_id": patient_id, "timestamp": stamp, "job_id": job_id, "clinic_id": clinic_id,
        "s3_key": f"uploads/{patient_id}/{job_id}/{when:%Y%m%dT%H%M%S}Z_checkin.webm",
        "analysis_type": "multimodal", "analyzed_at": stamp, "processing_time_seconds": 41.5, "status": "completed",
        "metadata": metadata,
        "results": {
            "audio_emotion": {"primary_emotion": None, "confidence": None, "all_emotions": [], "assessed": False,
                              "method": None, "reason": "no validated speech-emotion model is configured"},
            "facial_emotion": {
                "primary_emotion": "neutral", "confidence": 0.61, "face_detected": True, "frame_count": 40,
                "all_emotions": [{"emotion": "neutral", "confidence": 0.61}, {"emotion": "sad", "confidence": 0.2},
                                 {"emotion": "happy", "confidence": 0.19}],
                "assessed": True, "method": "fer 25.10.3 tflite + face-api 1.7.15 (mean)", "reason": None,
                "validation": {"balanced_recall": 0.57, "dataset": "FER2013 PrivateTest", "n": 3589},
                "timeline": [{"t": round(0.25 * k, 2), "emotion": ("neutral", "sad", "happy")[k % 3 if k % 4 else 0],
                              "confidence": round(0.5 + 0.04 * (k % 5), 2)} for k in range(24)],
                "expressivity": {"blendshape_activity": video["facial_expressivity"]["value"],
                                 "blendshape_std": {"mouthSmileLeft": 0.05, "mouthSmileRight": 0.048,
                                                    "browInnerUp": 0.03, "jawOpen": 0.09, "browDownLeft": 0.012}},
            },
            "vocal_markers": vocal,
            "video_markers": video,
            "compliance": {
                "pill_detected": None, "hand_detected": True, "face_detected": True, "compliance_score": None,
                "confidence": 0.39, "verification_status": status, "steps": steps,
                "assessed": status != "not_assessed",
                "reason": "pill detection is not configured, so intake cannot be verified" if status in (
                    "inconclusive", "not_assessed") else "see the steps",
                "evidence_frames": [{"step": s["step"], "t": s["first_seen_s"], "key": s["evidence_frame"]}
                                    for s in steps if s["evidence_frame"]],
                "pill_detector": {"configured": False, "model": None, "validated_on_real_pills": False,
                                  "note": "no pill detector is configured"},
            },
            "multimodal_fusion": {
                "emotional_consistency": "single_modality", "overall_emotion": "neutral", "confidence": 0.49,
                "risk_level": risk, "risk_factors": ["speech_rate_below_baseline"] if risk != "low" else [],
                "risk_evidence": [{"factor": "speech_rate_below_baseline", "severity": "moderate",
                                   "evidence": "speech rate 116 syllables per min, usual 190 (-39%)"}]
                if risk != "low" else [],
                "modalities_assessed": ["vision"],
                "modalities_not_assessed": {"audio": "no validated speech-emotion model is configured"},
                "method": "rule_based_v2",
            },
            "clinical_summary": {
                "emotional_state": "Mostly neutral facial expression.",
                "medication_adherence": "Intake could not be verified: no pill detector is configured.",
                "risk_assessment": f"{risk.capitalize()} risk.", "recommendations": ["Review at the next visit"],
                "generated_by": "rule_based", "timestamp": stamp, "flags": flags,
            },
            "transcript": {"enabled": True, "text": transcript, "model": "whisper tiny.en (faster-whisper)",
                           "segments": [{"start": 0.5, "end": 0.5 + 0.4 * len(words), "text": transcript,
                                         "words": [{"word": w, "start": round(0.5 + 0.4 * k, 2),
                                                    "end": round(0.8 + 0.4 * k, 2)} for k, w in enumerate(words)]}],
                           "language": "en", "language_probability": 0.97},
            "answers": results_answers,
        },
    }


def answers_block(words: list[str], earlier_latencies: list[float]) -> dict[str, Any]:
    """The per-question `answers` block (services/audio/answers.py) for a check-in of two answers, the
    transcript's words split between them, each latency with fusion's baseline block."""
    half = max(1, len(words) // 2)
    items = []
    for index, (step, said, latency) in enumerate((("mood", words[:half], 1.4), ("medication", words[half:], 2.9))):
        start, end = 9.0 * index, 9.0 * (index + 1)
        markers = {
            "response_latency": _marker(latency, "s", "prompt shown to the first Silero VAD speech onset",
                                        [v + 1.5 * index for v in earlier_latencies]),
            "speaking_time": Marker(assessed=True, value=round(0.4 * len(said), 2), unit="s",
                                    method="Silero VAD speech time, within the answer's window").as_dict(),
            "word_count": Marker(assessed=True, value=float(len(said)), unit="words",
                                 method="transcript words whose middle falls in the answer's window").as_dict(),
            "mattr": Marker(assessed=False, unit="ratio", method="moving-average type-token ratio, window 10 words",
                            reason=f"only {len(said)} words; MATTR needs at least 10").as_dict(),
        }
        items.append({"step_id": step, "start_s": start, "end_s": end, "clipped": False, "markers": markers,
                      "transcript": {"text": " ".join(said), "language": "en"}})
    return {"assessed": True, "reason": None, "flags": [], "items": items,
            "method": "the recording split at the check-in timeline's prompt times"}
