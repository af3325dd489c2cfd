"""The image checks run by `make check-images` (and so by CI): real containers
from the images `make images` built. They need a Docker engine, so a plain
`pytest` run deselects them (it says how many); `pytest -m images` runs them."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "images: checks of the built container images (make check-images)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "images" in (config.getoption("markexpr") or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("images")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("images")]
