"""Fusion worker: combines the modalities into overall emotion, risk and a clinical summary."""

from __future__ import annotations

import functools

from services.fusion.handlers import handle_modality_analysed
from services.fusion.settings import FusionSettings
from shared.worker import StageContext, run_stage


def build_handler(context: StageContext):
    return functools.partial(handle_modality_analysed, context=context)


def main() -> None:
    run_stage(FusionSettings(), "fusion", build_handler)


if __name__ == "__main__":
    main()
