"""A clinic's own pill detector in the vision worker: used only while its gate says live.

For each check-in of a clinic, the clinic's `DetectorRecord` is read (shared/aws/pill_labels.py).
Live: its ONNX model is fetched once per version into `cache_dir` and replaces the
deployment's detector for that check-in. Switched off (below the gate, e.g. after reviews
it disagreed with): the deployment's detector, or none, is used. Either way the compliance
block carries `clinic_detector` (version, validation figures, later reviews, live or not and
why), so the results say which detector looked and why another did not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from services.vision.pills import PillDetector, load_pill_detector
from shared.aws.pill_labels import DetectorRecord, PillLabelStore

S3_TIMEOUT_S = 60
Loader = Callable[[Path], PillDetector]


class ClinicDetectors:
    def __init__(self, store: PillLabelStore, loop: asyncio.AbstractEventLoop, cache_dir: Path,
                 load: Loader | None = None) -> None:
        self._store = store
        self._loop = loop
        self._cache = Path(cache_dir)
        self._load = load or (lambda path: load_pill_detector(path, validated_on_real_pills=True))
        self._loaded: dict[tuple[str, str], PillDetector] = {}

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(S3_TIMEOUT_S)

    def for_clinic(self, clinic_id: str | None) -> tuple[PillDetector | None, dict | None]:
        """(the detector to use instead of the deployment's, or None; the `clinic_detector` block, or None)."""
        if not clinic_id:
            return None, None
        record: DetectorRecord | None = self._run(self._store.record(clinic_id))
        if record is None:
            return None, None
        block = record.results_block()
        if not record.live:
            return None, {**block, "used": False}
        key = (clinic_id, record.version)
        if key not in self._loaded:
            path = self._cache / clinic_id / f"{record.version}.onnx"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self._run(self._store.model(clinic_id, record.version)))
            self._loaded[key] = self._load(path)
        return self._loaded[key], {**block, "used": True}
