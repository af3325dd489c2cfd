"""What can be checked of the services' one Dockerfile without a Docker engine:
pinned bases, a non-root user, no secrets, models only at build time, settings
it sets exist, and each service's own stage saying what differs by service."""

from __future__ import annotations

import re
import shlex

import pytest

from schizodot import licences
from shared.runtime.topology import STAGES
from tests.deploy.support import REPO, unknown_variables

DOCKERFILE = REPO / "deploy" / "docker" / "service.Dockerfile"
MODEL_STAGES = {"audio", "vision"}
# The stages every service builds on, in file order before `runtime` (the classic
# builder builds each of them whatever the target).
COMMON_STAGES = ("build", "models", "app", "runtime-base")


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def stages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """name -> (base, instructions) of each FROM ... AS name stage, in file order."""
    found: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, rest in instructions():
        if keyword == "FROM":
            words = rest.split()
            current = []
            if len(words) == 3 and words[1].upper() == "AS":
                found[words[2]] = (words[0], current)
        elif current is not None:
            current.append((keyword, rest))
    return found


def image_chain(service: str, target: str = "runtime") -> list[str]:
    """The stages a service's image is made of, from the base image up to `target`."""
    by_name = stages()
    chain = []
    stage = target
    while stage in by_name:
        chain.insert(0, stage)
        stage = by_name[stage][0].replace("${SERVICE}", service)
    return chain


def steps_of(service: str, target: str = "runtime") -> list[tuple[str, str]]:
    return [step for stage in image_chain(service, target) for step in stages()[stage][1]]


def env_of(service: str, target: str = "runtime") -> dict[str, str]:
    env = {}
    for keyword, rest in steps_of(service, target):
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def case_arms(text: str) -> dict[str, str]:
    """`case "$SERVICE" in` arms of a RUN: each service name -> what its arm does."""
    arms = {}
    for names, action in re.findall(r"(?:^|\s)([a-z|*]+)\)\s*(.*?);;", text):
        for name in names.split("|"):
            arms[name] = action.strip()
    return arms


def test_dockerfile_is_pinned_multistage_and_secret_free():
    steps = instructions()
    text = DOCKERFILE.read_text()
    assert not text.startswith("# syntax="), "BuildKit would fetch that frontend from Docker Hub"
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for k, rest in steps if k == "ARG" and "=" in rest}
    for base, _ in stages().values():
        image = args.get(base.strip("${}"), base) if base.startswith("${") else base
        if ":" in image:
            assert re.fullmatch(r"python:3\.11-slim-bookworm", image), image
    words = " ".join(rest for k, rest in steps if k in ("ARG", "ENV")).upper()
    assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", words)


def test_every_service_has_its_own_stage_and_only_those_are_accepted():
    by_name = stages()
    assert set(STAGES) <= set(by_name)
    assert by_name["runtime"][0] == "${SERVICE}"
    # The first build step refuses any other SERVICE (and none) with the list.
    check = next(rest for k, rest in by_name["build"][1] if k == "RUN")
    arms = case_arms(check)
    assert set(arms) == {*STAGES, "*"} and "exit" in arms["*"]
    # Each service reads its own requirements and code.
    copies = " ".join(rest for stage in ("build", "app") for k, rest in by_name[stage][1] if k == "COPY")
    assert "services/${SERVICE}/requirements.txt" in copies and "services/${SERVICE} services/${SERVICE}" in copies


@pytest.mark.parametrize("service", STAGES)
def test_each_image_is_non_root_has_a_healthcheck_and_runs_its_service(service):
    steps = steps_of(service)
    assert image_chain(service)[-2:] == [service, "runtime"]
    users = [rest for k, rest in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final image must not run as root"
    own = stages()[service][1]
    assert [k for k, _ in own].count("HEALTHCHECK") == 1 and [k for k, _ in own].count("CMD") == 1
    assert not [k for k, _ in steps if k in ("HEALTHCHECK", "CMD") and (k, _) not in own]
    assert ("CMD", f'["python", "-m", "services.{service}.main"]') in own
    exposed = {int(port) for k, rest in steps if k == "EXPOSE" for port in rest.split()}
    api_port = env_of(service).get(f"{service.upper()}_API_PORT")
    assert exposed == {9464, *([int(api_port)] if api_port else [])}


@pytest.mark.parametrize("service", STAGES)
def test_models_are_baked_at_build_time_or_mounted_never_fetched_at_run_time(service):
    models = " ".join(rest for k, rest in stages()["models"][1] if k == "RUN")
    fetch = 'python -m schizodot.models fetch --only "$SERVICE" --dest /models'
    assert fetch in models and '[ "$MODELS" = bake ]' in models  # the build argument choosing bake or mount
    fetching = {name for name, action in case_arms(models).items() if fetch in action}
    assert (service in fetching) == (service in MODEL_STAGES)
    paths = {k: v for k, v in env_of(service).items() if k.endswith(("_MODEL_PATH", "_LANDMARKER_PATH"))}
    assert bool(paths) == (service in MODEL_STAGES)
    assert all(v.startswith("/models/") for v in paths.values())
    # Nothing after the build stages runs the fetch.
    later = [rest for stage in image_chain(service)[image_chain(service).index("runtime-base"):]
             for k, rest in stages()[stage][1] if k == "RUN"]
    assert not [run for run in later if "schizodot.models" in run]


@pytest.mark.parametrize("service", STAGES)
def test_dockerfile_sets_only_variables_the_service_reads(service):
    assert unknown_variables(service, env_of(service)) == []
    if service == "vision":
        assert unknown_variables(service, env_of(service, "cuda")) == []


def test_the_runtime_stage_comes_before_any_other_variant():
    """`make images` builds --target runtime with the classic builder, which builds
    every stage before its target: nothing heavy may come first, and the service
    stages (built for every service) set metadata and copy files, never run anything."""
    by_name = stages()
    names = list(by_name)
    assert set(names[:names.index("runtime")]) == set(COMMON_STAGES) | set(STAGES)
    for service in STAGES:
        base, steps = by_name[service]
        assert base == "runtime-base"
        assert {k for k, _ in steps} <= {"ENV", "EXPOSE", "HEALTHCHECK", "CMD", "COPY"}, service


@pytest.mark.parametrize("spec", licences.IMAGES, ids=lambda spec: spec.name)
def test_each_image_installs_its_own_debian_packages(spec):
    """What the licence table lists per image is what the service's case arm installs."""
    expected = {
        "ingest": ["ffmpeg", "tini"],  # ffprobe checks uploads
        "audio": ["ffmpeg", "tini"],  # the sound track
        "vision": ["libgl1", "libglib2.0-0", "libegl1", "libgles2", "tini"],  # OpenCV, MediaPipe
        "fusion": ["tini"],
        "results": ["tini"],
    }
    assert licences.system_packages(spec) == expected[spec.service]
    assert spec.dockerfile == str(DOCKERFILE.relative_to(REPO))


def test_cpu_vision_image_has_no_torch_and_the_cuda_target_has_it():
    by_name = stages()
    runs = {name: " ".join(rest for k, rest in steps if k in ("RUN", "COPY")) for name, (_b, steps) in by_name.items()}
    assert "requirements-torch" not in runs["build"] and "requirements-torch.txt" in runs["cuda"]
    assert "--no-deps -r services/vision/requirements-torch-nodeps.txt" in runs["cuda"]
    assert '[ "$SERVICE" = vision ]' in runs["cuda"]  # the cuda target is vision's alone
    # torch goes on top of the CPU image: the two share its layers, torch's 7 GB is stored once
    assert "--from=build /opt/venv" in runs["runtime"] and by_name["cuda"][0] == "runtime"
    assert image_chain("vision", "cuda")[-3:] == ["vision", "runtime", "cuda"]
    users = [rest for k, rest in steps_of("vision", "cuda") if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    torch_side = {"torch", "torchvision", "ultralytics", "deepface"}
    core = (REPO / "services/vision/requirements.txt").read_text()
    assert not [line for line in core.splitlines() if line.split("=")[0].split(">")[0].strip() in torch_side]
    # No --target means the runtime image.
    assert instructions()[-1] == ("FROM", "runtime")


def test_no_service_keeps_a_dockerfile_of_its_own():
    assert not list((REPO / "services").glob("*/Dockerfile"))


def test_the_build_context_leaves_out_everything_git_ignores(tmp_path):
    """The context is the repository root, beside the venvs (7.5 GB for speechbrain's):
    whatever git ignores (environments, models, stack data, caches) must stay out
    of the context too, or the classic builder copies it to the daemon per image."""
    from docker.utils.build import exclude_paths

    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    ignored = [line.strip().lstrip("/") for line in (REPO / ".gitignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    planted = {}
    for entry in ignored:
        path = entry.rstrip("/").replace("*", "x") + ("/planted" if entry.endswith("/") else "")
        planted[entry] = path
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    (tmp_path / "shared").mkdir(exist_ok=True)
    (tmp_path / "shared" / "kept.py").write_text("")

    in_context = exclude_paths(str(tmp_path), patterns)

    assert "shared/kept.py" in in_context
    leaked = {entry: path for entry, path in planted.items() if path in in_context}
    assert not leaked, f".gitignore entries that .dockerignore lets into the build context: {leaked}"
