"""Structure figures for product code (issue 20), counted from the AST so that
the before and after of a clean-up compare on the same definitions:

  functions over 60 lines   a def (nested ones too) whose span, decorators
                            excluded, is more than 60 lines
  modules over 400 lines    a .py file with more than 400 lines
  dict[str, Any]            every `dict[str, Any]` / `Dict[str, Any]` subscript
                            (annotations, aliases and casts alike)
  import depth of shared/   the longest chain of modules in shared/ that import
                            each other (a -> b -> c is 3), module-level and
                            function-level imports alike
  README lines              lines of README.md

Product code is services/, shared/, schizodot/ and local_aws/ (when present),
without tests (any tests/ folder, test_*.py, conftest.py).

    python -m bench.structure            # the figures, then the long functions and modules
    python -m bench.structure --json     # the figures as JSON
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

PRODUCT_ROOTS = ("services", "shared", "schizodot", "local_aws")
LONG_FUNCTION_LINES = 60
LONG_MODULE_LINES = 400


@dataclass
class Figures:
    long_functions: list[tuple[str, int]] = field(default_factory=list)
    long_modules: list[tuple[str, int]] = field(default_factory=list)
    dict_str_any: int = 0
    shared_import_depth: int = 0
    shared_deepest_chain: list[str] = field(default_factory=list)
    readme_lines: int = 0


def product_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for top in PRODUCT_ROOTS:
        for path in sorted((root / top).rglob("*.py")):
            relative = path.relative_to(root)
            if "tests" in relative.parts or path.name.startswith("test_") or path.name == "conftest.py":
                continue
            files.append(path)
    return files


def _is_dict_str_any(node: ast.AST) -> bool:
    if not isinstance(node, ast.Subscript):
        return False
    base = node.value
    name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
    if name not in {"dict", "Dict"} or not isinstance(node.slice, ast.Tuple) or len(node.slice.elts) != 2:
        return False
    key, value = node.slice.elts
    return ast.unparse(key) == "str" and ast.unparse(value) in {"Any", "typing.Any"}


def _shared_imports(module: str, tree: ast.Module) -> set[str]:
    """Modules of shared/ that `module` imports (absolute or relative)."""
    found: set[str] = set()
    package = module if module == "shared" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("shared."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "shared" or target.startswith("shared."):
                found.add(target)
                # `from shared.aws import jobs` names a module, not an attribute
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def measure(root: Path) -> Figures:
    figures = Figures()
    graph: dict[str, set[str]] = {}
    for path in product_files(root):
        source = path.read_text(encoding="utf-8")
        relative = path.relative_to(root).as_posix()
        line_count = len(source.splitlines())
        if line_count > LONG_MODULE_LINES:
            figures.long_modules.append((relative, line_count))
        tree = ast.parse(source, filename=relative)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = (node.end_lineno or node.lineno) - node.lineno + 1
                if span > LONG_FUNCTION_LINES:
                    figures.long_functions.append((f"{relative}:{node.lineno} {node.name}", span))
            elif _is_dict_str_any(node):
                figures.dict_str_any += 1
        if relative.startswith("shared/"):
            module = relative[:-3].replace("/", ".")
            module = module.removesuffix(".__init__")
            graph[module] = _shared_imports(module, tree)
    modules = set(graph)
    edges = {m: {t for t in targets if t in modules and t != m} for m, targets in graph.items()}

    @functools.lru_cache(maxsize=None)
    def deepest(module: str, seen: frozenset[str] = frozenset()) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for target in edges[module]:
            if target in seen:  # a cycle: not followed (there should be none)
                continue
            chain = deepest(target, seen | {module})
            if len(chain) > len(best):
                best = chain
        return (module, *best)

    chains = [deepest(m) for m in sorted(modules)]
    longest = max(chains, key=len, default=())
    figures.shared_import_depth = len(longest)
    figures.shared_deepest_chain = list(longest)
    readme = root / "README.md"
    figures.readme_lines = len(readme.read_text(encoding="utf-8").splitlines()) if readme.exists() else 0
    figures.long_functions.sort(key=lambda item: -item[1])
    figures.long_modules.sort(key=lambda item: -item[1])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = measure(args.root)
    summary = {
        "functions_over_60_lines": len(figures.long_functions),
        "modules_over_400_lines": len(figures.long_modules),
        "dict_str_any_in_product_code": figures.dict_str_any,
        "shared_import_depth": figures.shared_import_depth,
        "readme_lines": figures.readme_lines,
    }
    if args.json:
        json.dump(summary | {"shared_deepest_chain": figures.shared_deepest_chain}, sys.stdout, indent=2)
        print()
        return 0
    for name, value in summary.items():
        print(f"{name:32} {value}")
    print(f"{'deepest shared/ import chain':32} {' -> '.join(figures.shared_deepest_chain)}")
    print("\nfunctions over 60 lines:")
    for where, span in figures.long_functions:
        print(f"  {span:4}  {where}")
    print("\nmodules over 400 lines:")
    for where, lines in figures.long_modules:
        print(f"  {lines:4}  {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
