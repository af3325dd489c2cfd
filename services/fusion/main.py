"""Fusion worker: combines the modalities into overall emotion, risk and a clinical summary."""

from __future__ import annotations

import functools

from services.fusion.handlers import FusionDeps, handle_modality_analysed
from services.fusion.llm import BedrockSummaryWriter
from services.fusion.settings import FusionSettings
from shared.history import PatientHistory
from shared.worker import StageContext, run_stage


def build_handler(context: StageContext):
    settings: FusionSettings = context.settings  # type: ignore[assignment]
    deps = FusionDeps(
        history=PatientHistory(context.aws.dynamodb, settings.users_table),
        summary_writer=BedrockSummaryWriter(settings) if settings.llm_enabled else None,
    )
    return functools.partial(handle_modality_analysed, context=context, deps=deps)


def main() -> None:
    run_stage(FusionSettings(), "fusion", build_handler)


if __name__ == "__main__":
    main()
