"""What can be checked of the Dockerfiles without a Docker engine: pinned bases,
a non-root user, no secrets, models only at build time, settings they set exist."""

from __future__ import annotations

import re
import shlex

import pytest

from shared.topology import STAGES
from tests.deploy.support import REPO, unknown_variables

MODEL_STAGES = {"audio", "vision"}


def instructions(service: str) -> list[tuple[str, str]]:
    text = (REPO / "services" / service / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def env_of(service: str) -> dict[str, str]:
    env = {}
    for keyword, rest in instructions(service):
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


@pytest.mark.parametrize("service", STAGES)
def test_dockerfile_is_pinned_multistage_non_root_and_secret_free(service):
    steps = instructions(service)
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for k, rest in steps if k == "ARG" and "=" in rest}
    bases = [rest.split()[0] for k, rest in steps if k == "FROM"]
    assert len(bases) >= 2, "multi-stage"
    for base in bases:
        image = args.get(base.strip("${}"), base) if base.startswith("${") else base
        if ":" in image:
            assert not image.endswith(":latest"), image
            assert re.fullmatch(r"python:3\.11-slim-bookworm", image), image
    users = [rest for k, rest in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final image must not run as root"
    assert any(k == "HEALTHCHECK" for k, _ in steps)
    words = " ".join(rest for k, rest in steps if k in ("ARG", "ENV")).upper()
    assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", words)
    assert ("CMD", f'["python", "-m", "services.{service}.main"]') in steps


@pytest.mark.parametrize("service", STAGES)
def test_models_are_baked_at_build_time_or_mounted_never_fetched_at_run_time(service):
    runs = " ".join(rest for k, rest in instructions(service) if k == "RUN")
    fetch = f"python -m schizodot.models fetch --only {service} --dest /models"
    assert (fetch in runs) == (service in MODEL_STAGES)
    if service in MODEL_STAGES:
        assert '[ "$MODELS" = bake ]' in runs  # the build argument choosing bake or mount
        paths = {k: v for k, v in env_of(service).items() if k.endswith(("_MODEL_PATH", "_LANDMARKER_PATH"))}
        assert paths and all(v.startswith("/models/") for v in paths.values())


@pytest.mark.parametrize("service", STAGES)
def test_dockerfile_sets_only_variables_the_service_reads(service):
    assert unknown_variables(service, env_of(service)) == []


def stages(service: str) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(name, base, instructions) of each FROM ... AS name stage, in file order."""
    found: list[tuple[str, str, list[tuple[str, str]]]] = []
    for keyword, rest in instructions(service):
        if keyword == "FROM":
            words = rest.split()
            found.append((words[-1] if len(words) == 3 and words[1].upper() == "AS" else "", words[0], []))
        elif found:
            found[-1][2].append((keyword, rest))
    return found


@pytest.mark.parametrize("service", STAGES)
def test_the_runtime_stage_comes_before_any_other_variant(service):
    """`make images` builds --target runtime with the classic builder, which builds
    every stage before its target: nothing heavier may come first."""
    text = (REPO / "services" / service / "Dockerfile").read_text()
    assert not text.startswith("# syntax="), "BuildKit would fetch that frontend from Docker Hub"
    names = [name for name, _base, _steps in stages(service)]
    assert "runtime" in names
    assert set(names[:names.index("runtime")]) <= {"build", "models", "app", "runtime-base"}


def test_cpu_vision_image_has_no_torch_and_the_cuda_target_has_it():
    by_name = {name: (base, steps) for name, base, steps in stages("vision")}
    runs = {name: " ".join(rest for k, rest in steps if k in ("RUN", "COPY")) for name, (_b, steps) in by_name.items()}
    assert "requirements-torch" not in runs["build"] and "requirements-torch.txt" in runs["build-torch"]
    assert "--no-deps -r services/vision/requirements-torch-nodeps.txt" in runs["build-torch"]
    assert "--from=build /opt/venv" in runs["runtime"] and "--from=build-torch /opt/venv" in runs["cuda"]
    assert by_name["runtime"][0] == by_name["cuda"][0] == "runtime-base"
    # MediaPipe links libEGL and libGLESv2 even on the CPU.
    assert {"libegl1", "libgles2"} <= set(runs["runtime-base"].split())
    torch_side = {"torch", "torchvision", "ultralytics", "deepface"}
    core = (REPO / "services/vision/requirements.txt").read_text()
    assert not [line for line in core.splitlines() if line.split("=")[0].split(">")[0].strip() in torch_side]
    # No --target means the CPU image.
    assert instructions("vision")[-1] == ("FROM", "runtime")
