"""The layers of shared/ (shared/__init__.py) hold: a module imports only from its own layer and those
below it, and the stages whose images install no web framework import none."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# lowest first; shared.fakes sits above every layer (it drives the runner over in-memory adapters)
LAYERS = ("shared.domain", "shared.settings", "shared.aws", "shared.identity", "shared.runtime", "shared.fakes")


def _layer(module: str) -> int:
    for index, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return index
    raise AssertionError(f"{module} belongs to no layer of shared/ (add it to one, or to LAYERS)")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("shared."))
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("shared."):
            found.add(node.module)
    return found


def _shared_modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted((REPO / "shared").rglob("*.py")):
        relative = path.relative_to(REPO)
        if "tests" in relative.parts or path.name == "__init__.py":
            continue
        modules.append((".".join(relative.with_suffix("").parts), path))
    return modules


def test_every_shared_module_imports_only_its_own_layer_and_those_below():
    upward = [f"{module} ({LAYERS[_layer(module)]}) imports {target} ({LAYERS[_layer(target)]})"
              for module, path in _shared_modules() for target in sorted(_imports(path))
              if _layer(target) > _layer(module)]
    assert upward == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check above can fail: a domain module importing the runtime is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from shared.runtime.runner import StageRunner\n")
    assert {target for target in _imports(bad) if _layer(target) > _layer("shared.domain.job")} == {
        "shared.runtime.runner"}


@pytest.mark.parametrize("stage", ["audio", "vision", "fusion"])
def test_a_stage_whose_image_has_no_web_framework_imports_none(stage):
    """services/<stage>/requirements.txt lists no FastAPI, so its process must not need it (the HTTP
    parts of shared/ are for ingest and results, which list it)."""
    assert "fastapi" not in (REPO / "services" / stage / "requirements.txt").read_text()
    probe = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
             "print(' '.join(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe, f"services.{stage}.main"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
