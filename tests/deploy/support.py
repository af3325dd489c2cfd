"""What the deployment checks share: the validators as subprocesses, the
rendered manifests, and the environment variable names each service's
settings class accepts (the one source of truth for configuration)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.audio.settings import AudioSettings
from services.fusion.settings import FusionSettings
from services.ingest.settings import IngestSettings
from services.results.settings import ResultsSettings
from services.vision.settings import VisionSettings
from shared.settings import CommonSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("dev", "prod")
KEDA_SCHEMA = DEPLOY / "schemas" / "keda-scaledobject.schema.json"

SETTINGS = {
    "ingest": IngestSettings,
    "audio": AudioSettings,
    "vision": VisionSettings,
    "fusion": FusionSettings,
    "results": ResultsSettings,
}

# Variables a container may carry that no settings class reads, and who reads them.
NOT_SETTINGS = {
    "AWS_ACCESS_KEY_ID": "botocore",
    "AWS_SECRET_ACCESS_KEY": "botocore",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "the OpenTelemetry SDK",
    "OTEL_SERVICE_NAME": "the OpenTelemetry SDK",
    "OTEL_TRACES_SAMPLER": "the OpenTelemetry SDK",
    "YOLO_OFFLINE": "ultralytics",
    "YOLO_AUTOINSTALL": "ultralytics",
    "YOLO_CONFIG_DIR": "ultralytics",
    "MPLCONFIGDIR": "matplotlib (imported by mediapipe)",
    "HOME": "the process",
    "PATH": "the process",
    "PYTHONUNBUFFERED": "Python",
    "PYTHONDONTWRITEBYTECODE": "Python",
    "PIP_NO_CACHE_DIR": "pip (build stage)",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip (build stage)",
    "NVIDIA_VISIBLE_DEVICES": "the NVIDIA container runtime",
    "NVIDIA_DRIVER_CAPABILITIES": "the NVIDIA container runtime",
}


def tool(name: str) -> str:
    """A validator from the venv (pip) or the system (apt); `make setup` installs them."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run `make setup`", pytrace=False)
    return found


def run_tool(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def accepted_env_names(settings_class: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (upper-cased, as in containers),
    those of the settings classes it holds included (each has its own prefix)."""
    prefix = settings_class.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings):
            names.update(accepted_env_names(field.annotation))
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


class ServiceSettings:
    """What a service process reads: its own settings class and the common one."""

    def __init__(self, own: BaseSettings, common: CommonSettings) -> None:
        self.own, self.common = own, common

    def __getattr__(self, name: str):
        return getattr(self.own if hasattr(self.own, name) else self.common, name)


def settings_from(settings_class: type[BaseSettings], env: dict[str, str], monkeypatch):
    """Build the settings a container with exactly `env` would get (types and ranges validated)."""
    for key in list(os.environ):
        if key.upper().startswith(("SCHIZODOT_", "AWS_", "DYNAMO_", "INGEST_", "AUDIO_", "VISION_",
                                   "FUSION_", "RESULTS_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    if settings_class is CommonSettings:
        return CommonSettings()
    return ServiceSettings(settings_class(), CommonSettings())


def unknown_variables(service: str, env: dict[str, str]) -> list[str]:
    known = accepted_env_names(CommonSettings) | accepted_env_names(SETTINGS[service]) | set(NOT_SETTINGS)
    return sorted(key for key in env if key.upper() not in known)


@cache
def rendered(overlay: str) -> tuple[dict, ...]:
    result = run_tool(tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay))
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(docs: tuple[dict, ...], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def container_env(docs: tuple[dict, ...], service: str) -> dict[str, str]:
    """The environment a service's container gets from its ConfigMaps and env entries."""
    deployment = of_kind(docs, "Deployment")[f"schizodot-{service}"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    config_maps = of_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            continue  # credentials live in Secrets made outside the repository
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    env.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
    return env
