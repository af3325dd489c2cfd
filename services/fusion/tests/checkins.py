"""Stage outputs in the shapes of CONTRACT-10 (audio.json, vision.json) and SchizodotUsers items, for the fusion tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from shared.domain.findings import AudioFindings, VisionFindings
from shared.domain.markers import measured, not_assessed

NOT_CONFIGURED = "no validated speech-emotion model is configured"  # the audio stage's default reason

VOCAL_UNITS = {"speaking_fraction": "%", "pause_count": "count", "pause_rate": "per min", "mean_pause_duration": "s",
               "speech_rate": "syllables per min", "pitch_mean": "Hz", "pitch_variability": "semitones",
               "intensity": "dB", "jitter": "%", "shimmer": "%", "hnr": "dB"}
VIDEO_UNITS = {"facial_expressivity": "blendshape activity (0-1)", "positive_expression_share": "%",
               "head_movement": "deg/s", "face_in_view_share": "%"}
STEADY_VOICE = {"speaking_fraction": 62.0, "pause_count": 4, "pause_rate": 9.0, "mean_pause_duration": 0.7,
                "speech_rate": 210.0, "pitch_mean": 118.0, "pitch_variability": 2.4, "intensity": 68.0,
                "jitter": 0.9, "shimmer": 6.0, "hnr": 14.0}
STEADY_FACE = {"facial_expressivity": 0.09, "positive_expression_share": 30.0, "head_movement": 6.0,
               "face_in_view_share": 97.0}
VALIDATION = {"balanced_recall": 0.57, "dataset": "FER2013 PrivateTest", "n": 3589}


def markers(units: dict[str, str], values: dict[str, float | None]) -> dict[str, dict]:
    return {name: (measured(values[name], unit, f"test method of {name}") if values.get(name) is not None
                   else not_assessed(unit, f"test method of {name}", "not measured in this test"))
            for name, unit in units.items()}


def emotion(label: str | None, confidence: float = 0.8, *, validation: dict | None = None,
            reason: str | None = None, **extra: Any) -> dict:
    if label is None:
        return {"primary_emotion": None, "confidence": None, "all_emotions": [], "assessed": False,
                "method": None, "validation": None, "reason": reason or NOT_CONFIGURED, **extra}
    rest = round(1 - confidence, 3)
    return {"primary_emotion": label, "confidence": confidence, "assessed": True, "method": "test model",
            "validation": validation, "reason": None,
            "all_emotions": [{"emotion": label, "confidence": confidence}, {"emotion": "neutral", "confidence": rest}],
            **extra}


def audio(voice: dict | None = None, *, speech: bool = True, duration: float = 20.0,
          transcript: dict | None = None, **values: float | None) -> dict:
    return {
        "audio_emotion": voice or emotion(None),
        "vocal_markers": markers(VOCAL_UNITS, {**STEADY_VOICE, **values}) if speech else
        {name: not_assessed(unit, "m", f"no speech detected in {duration:.1f} s of audio")
         for name, unit in VOCAL_UNITS.items()},
        "speech_detected": speech,
        "duration_seconds": duration,
        "transcript": transcript or {"enabled": False, "text": None, "segments": [], "model": None,
                                     "reason": "transcription is off (AUDIO_TRANSCRIPT_ENABLED)"},
    }


def compliance(status: str = "not_assessed", *, detector: bool | None = None) -> dict:
    detector = status != "not_assessed" if detector is None else detector
    reasons = {"not_assessed": "no pill detector is configured, so the pill could not be looked for",
               "inconclusive": "the pill was not seen on the tongue",
               "non_compliant": "the pill was taken back out of the mouth", "compliant": None}
    return {"pill_detected": None if status == "not_assessed" else status == "compliant",
            "hand_detected": True, "face_detected": True,
            "compliance_score": None if status == "not_assessed" else {"compliant": 0.95}.get(status, 0.2),
            "confidence": 0.8, "verification_status": status, "assessed": status != "not_assessed",
            "reason": reasons[status], "steps": [],
            "pill_detector": {"configured": detector, "model": "pills.onnx" if detector else None,
                              "validated_on_real_pills": False, "note": None}}


def vision(face: dict | None = None, *, status: str = "not_assessed", detector: bool | None = None,
           face_detected: bool = True, **values: float | None) -> dict:
    facial = face or emotion("neutral", 0.7, validation=VALIDATION)
    facial = {**facial, "face_detected": face_detected, "frame_count": 40}
    if not face_detected:
        facial = {**emotion(None, reason="no face was visible in any of the 40 analysed frames"),
                  "face_detected": False, "frame_count": 40}
    return {"facial_emotion": facial,
            "video_markers": markers(VIDEO_UNITS, {**STEADY_FACE, **values} if face_detected else {}),
            "compliance": compliance(status, detector=detector)}


def item(results: dict, days_ago: int) -> dict:
    stamp = (datetime(2026, 3, 1, tzinfo=timezone.utc) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"user_id": "patient-001", "job_id": f"job-{days_ago:012x}", "timestamp": stamp, "results": results}


def history(*checkins: tuple[dict | None, dict | None], risk: str = "low") -> list[dict]:
    """Earlier items, newest first, from (audio, vision) pairs."""
    out = []
    for i, (a, v) in enumerate(checkins):
        results = {"vocal_markers": (a or {}).get("vocal_markers") or {},
                   "video_markers": (v or {}).get("video_markers") or {},
                   "compliance": (v or {}).get("compliance") or {}, "multimodal_fusion": {"risk_level": risk}}
        out.append(item(results, i + 1))
    return out


ARTIFACT_IDS = {"job_id": "job-" + "0" * 32, "analysed_at": "2026-03-01T12:00:00.000000Z"}


def as_audio(document: dict | None) -> AudioFindings | None:
    """An audio document as fusion reads it from its artifact (with the ids every artifact carries)."""
    return None if document is None else AudioFindings.model_validate({**ARTIFACT_IDS, **document})


def as_vision(document: dict | None) -> VisionFindings | None:
    """A vision document as fusion reads it from its artifact (with the ids every artifact carries)."""
    return None if document is None else VisionFindings.model_validate({**ARTIFACT_IDS, **document})
