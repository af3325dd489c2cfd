"""What the image checks share: the images' names, the docker CLI, and running
a few lines of Python inside an image with the image's own code."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import textwrap
from functools import cache
from typing import Any, Callable

import pytest

from shared.runtime.topology import STAGES

TAG = os.environ.get("SCHIZODOT_IMAGE_TAG", "dev")
# Every image `make images` builds: the five services (CPU) and vision's cuda target.
IMAGES = (*STAGES, "vision-cuda")


def image_name(image: str) -> str:
    return f"schizodot-vision:{TAG}-cuda" if image == "vision-cuda" else f"schizodot-{image}:{TAG}"


def service_of(image: str) -> str:
    return image.removesuffix("-cuda")


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@cache
def inspect_image(image: str) -> dict[str, Any]:
    result = docker("image", "inspect", image_name(image), check=False)
    if result.returncode != 0:
        pytest.fail(f"image {image_name(image)} is not built: run `make images`", pytrace=False)
    return json.loads(result.stdout)[0]


def python_in(image: str, functions: tuple[Callable, ...], body: str, env: dict[str, str] | None = None,
              user: str | None = None, timeout: float = 120) -> Any:
    """Run `body` with the image's Python and code (and `functions`' source in front
    of it), as the image's user unless `user` is given, with no network and a
    read-only root; `body` prints one JSON document, returned parsed."""
    source = "\n\n".join(textwrap.dedent(inspect.getsource(f)) for f in functions)
    script = f"import json\n{source}\n\n{textwrap.dedent(body)}"
    options = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
    if user is not None:
        options += ["--user", user]
    result = docker("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
                    "--entrypoint", "python", *options, image_name(image), "-c", script, timeout=timeout)
    return json.loads(result.stdout.strip().splitlines()[-1])
