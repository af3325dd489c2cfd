"""Audio: what the audio stage does with an analysis request.

It is a modality stage (shared/runtime/modality.py: fetch the job's media, run the
analyser off the event loop with progress, store its findings as
`artifacts/<job>/audio.json`, tell fusion); its analyser extracts the sound
track as 16 kHz mono WAV (shared.runtime.media.extract_audio: a file without one fails
the job in words) and hands it to `AudioAnalyser` (speech activity, vocal
markers, speech emotion where a validated model is configured, transcript
where the deployment enables it and the check-in's options ask for it, in the
languages the check-in's clinic expects), and the patient's self-report of the
medication from the transcript (self_report.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from services.audio.quality import recording_source
from services.audio.self_report import self_report
from shared.runtime.media import extract_audio
from shared.runtime.modality import Analyse, Checkin, Progress, modality_stage

if TYPE_CHECKING:  # the analyser's models are the composition root's to load
    from services.audio.analysis import AudioAnalyser
    from services.audio.languages import ClinicLanguages

AUDIO = modality_stage("audio")


def make_analyse(analyser: AudioAnalyser, sample_rate: int, languages: ClinicLanguages | None = None) -> Analyse:
    def analyse(media_path: Path, progress: Progress, checkin: Checkin | None = None) -> dict:
        progress(0.02, "extracting the sound track")
        source = recording_source(media_path)  # before conversion to 16 kHz mono: fusion's quality gate compares it
        wav = extract_audio(media_path, media_path.with_suffix(".wav"), sample_rate=sample_rate)
        # extraction is the first ~5 % of the work; the analyser reports the rest
        transcribe = checkin is None or checkin.options.wants("transcript")  # the check-in's options
        expected = {} if languages is None else {"languages": languages.for_clinic(checkin and checkin.clinic_id)}
        result = analyser.analyse(wav, lambda fraction, message: progress(0.05 + 0.95 * fraction, message),
                                  transcribe=transcribe, timeline=checkin.timeline if checkin else None, **expected)
        if isinstance(result.get("audio_quality"), dict):
            result["audio_quality"]["source"] = source
        # the spoken answer to the medication prompt, classified (self_report.py); never observed intake
        result["self_report"] = self_report(result.get("transcript"), checkin.timeline if checkin else None,
                                            result["duration_seconds"])
        return result

    return analyse
