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

from shared.runtime.topology import STAGES
from shared.settings import CommonSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("dev", "prod")
KEDA_SCHEMA = DEPLOY / "schemas" / "keda-scaledobject.schema.json"



def settings_class_of(service: str) -> type:
    """The service's one pydantic-settings class, found rather than named: the most
    derived BaseSettings subclass defined in services/<service>/settings.py (else
    the one its composition root, main.py, imports). Runs inside images too, so
    it imports what it needs itself."""
    import importlib
    import inspect

    from pydantic_settings import BaseSettings

    for module_name in (f"services.{service}.settings", f"services.{service}.main"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        found = [obj for obj in vars(module).values()
                 if inspect.isclass(obj) and issubclass(obj, BaseSettings) and obj is not BaseSettings
                 and obj.__module__.startswith(f"services.{service}")]
        leaves = [c for c in found if not any(other is not c and issubclass(other, c) for other in found)]
        if len(leaves) == 1:
            return leaves[0]
    raise LookupError(f"no single pydantic-settings class for {service}")


def settings_env_names(settings_class: type) -> set[str]:
    """The environment variables a pydantic-settings class reads (upper-cased, as in
    containers): aliases as they are, other fields with the class's env_prefix,
    nested models through env_nested_delimiter, nested settings classes with their
    own prefix. Runs inside images too, so it imports what it needs itself."""
    import typing

    from pydantic import AliasChoices, AliasPath, BaseModel
    from pydantic_settings import BaseSettings

    def models_in(annotation) -> list[type]:
        if isinstance(annotation, type):
            return [annotation] if issubclass(annotation, BaseModel) else []
        return [m for arg in typing.get_args(annotation) for m in models_in(arg)]

    def alias_names(alias) -> list[str]:
        if isinstance(alias, str):
            return [alias]
        if isinstance(alias, AliasChoices):
            return [n for choice in alias.choices for n in alias_names(choice)]
        if isinstance(alias, AliasPath):
            return [str(alias.path[0])]
        return []

    def walk(model: type, prefix: str, delimiter: str, top: bool) -> set[str]:
        names: set[str] = set()
        for field_name, field in model.model_fields.items():
            aliases = alias_names(field.validation_alias) or alias_names(field.alias)
            own = aliases if (aliases and top) else [f"{prefix}{aliases[0] if aliases else field_name}"]
            names.update(n.upper() for n in own)
            for nested in models_in(field.annotation):
                if issubclass(nested, BaseSettings):
                    names |= walk(nested, nested.model_config.get("env_prefix") or "",
                                  nested.model_config.get("env_nested_delimiter") or "", True)
                elif delimiter:
                    for name in own:
                        names |= walk(nested, f"{name}{delimiter}", delimiter, False)
        return names

    config = settings_class.model_config
    return walk(settings_class, config.get("env_prefix") or "", config.get("env_nested_delimiter") or "", True)


SETTINGS = {service: settings_class_of(service) for service in STAGES}


def serves_api(service: str) -> bool:
    """Whether the service has an HTTP API (services/<service>/api.py): its process then also
    reads shared.identity.auth's AuthSettings (SCHIZODOT_AUTH_*), how people's tokens are checked."""
    return (REPO / "services" / service / "api.py").exists()


def reads_clinics_file(service: str) -> bool:
    """Whether the service's code reads the clinics file (CommonSettings.clinics_file,
    SCHIZODOT_CLINICS_FILE): its containers must then be given it."""
    return any("clinics_file" in path.read_text() for path in (REPO / "services" / service).rglob("*.py")
               if "tests" not in path.relative_to(REPO).parts)


def check_clinics_file(path: Path) -> None:
    """Read a clinics file as every service that reads it does; a bad one raises, naming the problem."""
    from services.audio.languages import ClinicLanguages
    from services.ingest.patient.script import ScriptCatalog
    from shared.domain.clinics import ClinicDirectory

    ScriptCatalog.from_file(path)
    ClinicLanguages.from_file(path)
    ClinicDirectory.from_file(path)


def extra_settings_of(service: str) -> list[type]:
    """Settings classes a service process reads besides its own and CommonSettings."""
    if not serves_api(service):
        return []
    from shared.identity.tokens import AuthSettings

    return [AuthSettings]

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
    known = settings_env_names(CommonSettings) | settings_env_names(SETTINGS[service]) | set(NOT_SETTINGS)
    for extra in extra_settings_of(service):
        known |= settings_env_names(extra)
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
