"""The images' sizes as recorded in the repository (deploy/docker/image-sizes.json),
which the image checks hold each built image to. After an intended change:

    PYTHONPATH=$PWD .venv/bin/python -m tests.deploy.images.sizes    # records the built images' sizes
"""

from __future__ import annotations

import json

from tests.deploy.images.engine import IMAGES, docker, image_name
from tests.deploy.support import REPO

SIZES = REPO / "deploy" / "docker" / "image-sizes.json"
BASE_IMAGE = "python:3.11-slim-bookworm"


def size_of(name: str) -> int:
    return json.loads(docker("image", "inspect", name).stdout)[0]["Size"]


def base_image_config() -> dict:
    return json.loads(docker("image", "inspect", BASE_IMAGE).stdout)[0]["Config"]


def recorded() -> dict:
    return json.loads(SIZES.read_text())


def main() -> None:
    base = size_of(BASE_IMAGE)
    images = {}
    for image in IMAGES:
        size = size_of(image_name(image))
        images[image] = {"bytes": size, "own_bytes": size - base}
        print(f"{image_name(image):32} {size / 1e9:5.2f} GB  ({(size - base) / 1e9:5.2f} GB above the base)")
    SIZES.write_text(json.dumps({
        "about": "Built image sizes; own_bytes excludes the base image. tests/deploy/images fails when an "
                 "image's own_bytes grows by more than 20 %. Record with `python -m tests.deploy.images.sizes`.",
        "base": {"image": BASE_IMAGE, "bytes": base},
        "images": images,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
