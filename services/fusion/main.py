"""Fusion worker: combines the modalities into overall emotion, risk and a clinical summary."""

from __future__ import annotations

from services.fusion.handlers import FUSION, FusionDeps
from services.fusion.llm import BedrockSummaryWriter
from services.fusion.settings import FusionSettings
from shared.aws.history import PatientHistory
from shared.runtime.worker import StageContext, run_stage


def build_deps(context: StageContext[FusionSettings]) -> FusionDeps:
    settings = context.settings
    return FusionDeps(
        settings=settings,
        storage=context.storage,
        history=PatientHistory(context.aws.dynamodb, context.common.users_table),
        summary_writer=BedrockSummaryWriter(settings, context.common) if settings.llm_enabled else None,
    )


def main() -> None:
    run_stage(FUSION, FusionSettings(), build_deps)


if __name__ == "__main__":
    main()
