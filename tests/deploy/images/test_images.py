"""The built images themselves: their size against what the repository records,
the CPU vision image without torch, every installed package in the licence
table, and the Kubernetes Deployments against the images they run (image name,
user, ports, probes' ports, command, every environment variable)."""

from __future__ import annotations

import pytest
from packaging.utils import canonicalize_name

from schizodot import licences
from shared.runtime.topology import STAGES
from tests.deploy.images import sizes
from tests.deploy.images.engine import IMAGES, image_name, inspect_image, python_in, service_of
from tests.deploy.support import (
    NOT_SETTINGS,
    OVERLAYS,
    REPO,
    container_env,
    of_kind,
    rendered,
    settings_class_of,
    settings_env_names,
)

pytestmark = pytest.mark.images

GROWTH_LIMIT = 1.20
CPU_VISION_LIMIT_BYTES = 2_000_000_000
TORCH_SIDE = {"torch", "torchvision", "ultralytics", "deepface"}


@pytest.mark.parametrize("image", IMAGES)
def test_image_has_not_grown_more_than_20_percent(image):
    """Sizes without the base image (which is built locally where it cannot be
    pulled, and so differs by machine); the totals are in docs/deployment.md."""
    recorded = sizes.recorded()["images"][image]
    size = inspect_image(image)["Size"]
    own = size - sizes.size_of(sizes.BASE_IMAGE)
    print(f"{image_name(image)}: {size / 1e9:.2f} GB, {own / 1e9:.2f} GB above the base "
          f"(recorded {recorded['own_bytes'] / 1e9:.2f} GB)")
    assert own <= recorded["own_bytes"] * GROWTH_LIMIT, (
        f"{image_name(image)} grew from {recorded['own_bytes'] / 1e6:.0f} MB to {own / 1e6:.0f} MB above "
        f"its base (more than {GROWTH_LIMIT - 1:.0%}). If that is intended, record the new sizes "
        "(python -m tests.deploy.images.sizes) and update the image table in docs/deployment.md.")


def test_cpu_vision_image_is_small_and_carries_no_torch_compiler_or_build_cache():
    assert inspect_image("vision")["Size"] < CPU_VISION_LIMIT_BYTES
    found = python_in("vision", (), """
        import glob, importlib.metadata, os, shutil
        names = sorted(d.metadata["Name"] for d in importlib.metadata.distributions())
        compilers = [c for c in ("gcc", "cc", "g++", "clang", "make") if shutil.which(c)]
        caches = [p for p in glob.glob("/root/.cache/*") + glob.glob("/tmp/*") + ["/src"] if os.path.exists(p)]
        print(json.dumps({"packages": names, "compilers": compilers, "caches": caches}))
    """, user="0")
    packages = {canonicalize_name(name) for name in found["packages"]}
    assert not packages & TORCH_SIDE and not [p for p in packages if p.startswith("nvidia-")], packages
    assert found["compilers"] == [] and found["caches"] == []
    torch_side = python_in("vision-cuda", (), """
        import importlib.metadata
        print(json.dumps(sorted(d.metadata["Name"] for d in importlib.metadata.distributions())))
    """)
    assert TORCH_SIDE <= {canonicalize_name(name) for name in torch_side}


@pytest.mark.parametrize("image", IMAGES)
def test_every_installed_package_has_its_licence_in_the_table(image):
    installed = python_in(image, (), """
        import importlib.metadata, os, subprocess
        python = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
        debian = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n"],
                                capture_output=True, text=True).stdout.split("\\n")
        notices = [os.path.isfile(f"/usr/share/doc/schizodot/{name}") for name in ("LICENSE", "THIRD_PARTY_LICENSES.md")]
        print(json.dumps({"python": python, "debian": [line.split()[0] for line in debian
                                                        if line.endswith(" installed")], "notices": notices}))
    """)
    assert installed["notices"] == [True, True], "the image carries LICENSE and THIRD_PARTY_LICENSES.md"
    table = licences.parse(licences.TABLE.read_text())[image]
    listed = {name for name in table if not name.startswith("debian:")}
    shipped = {canonicalize_name(name): version for name, version in installed["python"].items()}
    shipped = {name: version for name, version in shipped.items() if name not in licences.VENV_TOOLS}
    assert not set(shipped) - listed, (
        f"{image_name(image)} ships packages {sorted(set(shipped) - listed)} that "
        f"{licences.TABLE.name} does not list: run `make licences`")
    assert not listed - set(shipped), (
        f"{licences.TABLE.name} lists {sorted(listed - set(shipped))} for {image}, which the image "
        "does not install: run `make licences`")
    drift = {name: (table[name]["version"], version) for name, version in shipped.items()
             if table[name]["version"] != version}
    if drift:
        print(f"{image}: versions differ from the table (table, image): {drift}")
    debian = {name.removeprefix("debian:") for name in table if name.startswith("debian:")}
    assert debian <= set(installed["debian"])


def local_image(reference: str, service: str) -> str:
    """The image `make images` builds for a Deployment's image reference."""
    repository, _, tag = reference.rpartition(":")
    assert repository.rsplit("/", 1)[-1] in (service, f"schizodot-{service}"), reference
    return f"{service}-cuda" if tag.endswith("-cuda") else service


def port_number(container: dict, port) -> int:
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    return named[port] if isinstance(port, str) else int(port)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", STAGES)
def test_deployment_names_only_what_its_image_has(overlay, service):
    docs = rendered(overlay)
    pod = of_kind(docs, "Deployment")[f"schizodot-{service}"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image = local_image(container["image"], service)
    config = inspect_image(image)["Config"]

    # The user the pod demands is the image's own (numeric, so runAsNonRoot can verify it).
    user, _, group = config["User"].partition(":")
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(user), int(group))
    # Every port, and every port a probe uses, is one the image exposes.
    exposed = {int(port.split("/")[0]) for port in config.get("ExposedPorts", {})}
    assert {p["containerPort"] for p in container["ports"]} <= exposed
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        handler = container[kind].get("httpGet") or container[kind].get("tcpSocket")
        assert port_number(container, handler["port"]) in exposed, kind
    # The command: the image's entry point runs the Deployment's args, which are the image's CMD.
    assert container.get("command") is None and config["Entrypoint"] == ["tini", "--"]
    assert container["args"] == config["Cmd"]

    # Inside the image, with the image's own code: the settings class reads every
    # variable the Deployment sets, accepts their values, and the paths they name exist.
    env = container_env(docs, service)
    args = container["args"]
    mounts = sorted(m["mountPath"] for m in container.get("volumeMounts", []) if m["mountPath"] != "/tmp")
    found = python_in(image, (settings_class_of, settings_env_names), f"""
        import importlib.util, os, shutil
        from shared.settings import CommonSettings
        settings_class = settings_class_of({service!r})
        settings_class()  # the Deployment's values, validated by the image's settings classes
        CommonSettings()
        extra = set()
        if importlib.util.find_spec("services.{service}.api") is not None:  # an API: people's tokens too
            from shared.identity.tokens import AuthSettings
            AuthSettings()
            extra = settings_env_names(AuthSettings)
        args = {args!r}
        mounted = {mounts!r}  # the pod provides these (ConfigMaps, Secrets), not the image
        # The files and folders the Deployment names (variables named *_PATH, *_FILE, *_DIR; a value
        # such as the cookie's URL path /console is not one), other than /tmp and what the pod mounts.
        paths = [value for name, value in {sorted(env.items())!r} if name.endswith(("_PATH", "_FILE", "_DIR"))
                 and value.startswith("/") and not value.startswith("/tmp")
                 and not any(value == m or value.startswith(m.rstrip("/") + "/") for m in mounted)]
        print(json.dumps({{
            "names": sorted(settings_env_names(settings_class) | settings_env_names(CommonSettings) | extra),
            "program": shutil.which(args[0]) is not None,
            "module": args[1] != "-m" or importlib.util.find_spec(args[2]) is not None,
            "missing": [p for p in paths if not os.path.exists(p)],
        }}))
    """, env=env)
    known = set(found["names"]) | set(NOT_SETTINGS)
    assert sorted(set(env) - known) == [], f"{service} ({overlay}): variables the image's settings do not read"
    base_env = set(sizes.base_image_config().get("Env") or [])
    image_env = {item.split("=", 1)[0] for item in config.get("Env", []) if item not in base_env}
    assert sorted(image_env - known) == [], f"{image_name(image)} sets variables its settings do not read"
    assert found["program"] and found["module"], container["args"]
    assert found["missing"] == [], f"{service} ({overlay}): paths the image lacks"


def test_the_manifests_and_compose_run_every_image_built():
    """dev runs the CPU images, prod the CUDA vision image: together every image is checked above."""
    used = set()
    for overlay in OVERLAYS:
        for service in STAGES:
            container = of_kind(rendered(overlay), "Deployment")[f"schizodot-{service}"]
            used.add(local_image(container["spec"]["template"]["spec"]["containers"][0]["image"], service))
    assert used == set(IMAGES)
    assert {service_of(image) for image in IMAGES} == set(STAGES)


def test_recorded_sizes_name_every_image():
    assert set(sizes.recorded()["images"]) == set(IMAGES)
    assert (REPO / "docs" / "deployment.md").read_text().count("| schizodot-") >= len(IMAGES)


@pytest.mark.parametrize(("env", "setting"), [
    ({"VISION_PILL_MODEL_PATH": "/models/face_landmarker.task"}, "VISION_PILL_MODEL_PATH"),
    ({"VISION_EMOTION_BACKEND": "deepface", "DEEPFACE_HOME": "/tmp"}, "VISION_DEVICE"),
])
def test_the_cpu_vision_image_refuses_the_torch_side_naming_the_setting(env, setting):
    """A `.pt` detector or the deepface backend asked of the CPU image stops the
    worker at start-up with the setting and the image that has them."""
    found = python_in("vision", (), """
        from services.vision.main import build_analyser
        from services.vision.settings import VisionSettings
        from shared.domain.errors import ModelUnavailable
        try:
            build_analyser(VisionSettings())
            print(json.dumps(None))
        except ModelUnavailable as exc:
            print(json.dumps({"setting": exc.setting, "message": str(exc)}))
    """, env=env)
    assert found and found["setting"] == setting
    assert "--target cuda" in found["message"]
