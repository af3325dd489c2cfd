"""Set-up installs only the Debian packages whose tools are missing: on a machine whose
Node.js comes from NodeSource (npm already on PATH), Debian's npm, which conflicts
with that nodejs ("held broken packages"), is never asked for."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.support import REPO

SCRIPT = REPO / "deploy" / "setup" / "system-packages.sh"
ALL_TOOLS = ("ffmpeg", "ffprobe", "espeak-ng", "chromium", "npm", "docker-compose")


def packages_to_install(tmp_path: Path, present: tuple[str, ...]) -> list[str]:
    """The script's package list on a PATH that holds exactly the tools `present`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in present:
        stub = bin_dir / tool
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    done = subprocess.run(["/bin/bash", str(SCRIPT), "--list"], env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_a_bare_machine_gets_every_package_once(tmp_path):
    assert packages_to_install(tmp_path, ()) == ["ffmpeg", "espeak-ng", "chromium", "npm", "docker-compose"]


def test_nodesource_npm_on_path_means_no_debian_npm(tmp_path):
    listed = packages_to_install(tmp_path, ("npm",))
    assert "npm" not in listed
    assert listed == ["ffmpeg", "espeak-ng", "chromium", "docker-compose"]


@pytest.mark.parametrize("present, expected", [
    (ALL_TOOLS, []),
    (("ffmpeg",), ["ffmpeg", "espeak-ng", "chromium", "npm", "docker-compose"]),  # ffprobe missing: its package
    (("ffmpeg", "ffprobe", "espeak-ng", "npm"), ["chromium", "docker-compose"]),
])
def test_only_the_packages_of_missing_tools(tmp_path, present, expected):
    assert packages_to_install(tmp_path, present) == expected


def test_the_makefile_installs_through_the_script():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nsystem-deps:\n", 1)[1].split("\n\n", 1)[0]
    assert "deploy/setup/system-packages.sh" in recipe
    assert "apt-get" not in recipe
