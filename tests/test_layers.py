"""The package layers of `src/cfxray`: every import points down.

Each unit (a top-level module or subpackage of `cfxray`) sits in one layer of `LAYERS`; a unit
may import itself and units of lower layers, never a higher layer nor a peer in its own. Every
import counts, function-local ones included, since a lazy import is still a dependency.
docs/ARCHITECTURE.md draws the same map.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "cfxray"

# Lowest first. "" is `cfxray/__init__.py` itself (the version).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({""}),
    frozenset({"conventions", "errors"}),
    frozenset({"settings", "lineage", "contract", "checkpoint", "device"}),
    frozenset({"data"}),
    frozenset({"models"}),
    frozenset({"evaluation"}),
    frozenset({"train"}),
    frozenset({"audit"}),
    frozenset({"export"}),
    frozenset({"serving", "pipeline"}),
    frozenset({"study"}),
    frozenset({"cli"}),
)
# The imports allowed against the order: (importing module, imported unit) -> why.
UPWARD: dict[tuple[str, str], str] = {
    ("cfxray.audit.reproduce", "cli"):
        "`cfxray reproduce` re-runs a recorded step through the cfxray command itself",
}
# Optional dependencies and the only modules that may import them when they are imported
# (anywhere else they must stay inside functions).
MODULE_LEVEL_OPTIONAL = {
    "kfp": ("cfxray.pipeline.definition", "cfxray.pipeline.components"),
    "tritonclient": (),
    "gradio": (),
    "captum": (),
    "statsmodels": (),
    "sqlalchemy": ("cfxray.study.store",),
    "fastapi": ("cfxray.study.server",),
    "uvicorn": (),
}


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def unit_of(module: str) -> str:
    """`cfxray.models.networks` -> `models`; `cfxray` -> ``."""
    parts = module.split(".")
    assert parts[0] == PACKAGE, module
    return parts[1] if len(parts) > 1 else ""


def _walk(node: ast.AST, module_level_only: bool) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if module_level_only and isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        yield child
        yield from _walk(child, module_level_only)


def imports(module: str, path: Path, module_level_only: bool = False
            ) -> Iterator[tuple[str, int]]:
    """Every absolute module name `module` imports (`from a import b` gives a and a.b), with
    its line; relative imports are resolved against the module's package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _walk(ast.parse(path.read_text(), str(path)), module_level_only):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def imported_units(module: str, path: Path) -> dict[str, int]:
    """The other cfxray units `module` imports, each with the line of its first import."""
    units = {unit_of(m) for m in module_files()}
    found: dict[str, int] = {}
    for name, line in imports(module, path):
        if not name.startswith(f"{PACKAGE}."):
            continue  # not cfxray, or the bare package (`from cfxray import data` gives both)
        unit = unit_of(name)
        if unit not in units:
            unit = ""  # `from cfxray import __version__`: a name from cfxray/__init__.py
        if unit != unit_of(module):
            found.setdefault(unit, line)
    return found


def layer_of(unit: str) -> int:
    (index,) = [i for i, layer in enumerate(LAYERS) if unit in layer]
    return index


def test_every_unit_has_exactly_one_layer():
    units = {unit_of(module) for module in module_files()}
    placed = [unit for layer in LAYERS for unit in layer]
    assert len(placed) == len(set(placed)), "a unit is listed in two layers"
    assert units == set(placed), (f"not in LAYERS: {sorted(units - set(placed))}; "
                                  f"in LAYERS but not in src/cfxray: {sorted(set(placed) - units)}")


def test_imports_point_down_the_layers():
    wrong = []
    for module, path in module_files().items():
        own = layer_of(unit_of(module))
        for unit, line in imported_units(module, path).items():
            if layer_of(unit) >= own and (module, unit) not in UPWARD:
                where = "a peer in its layer" if layer_of(unit) == own else "a higher layer"
                wrong.append(f"{path.relative_to(SRC)}:{line}: {module} imports "
                             f"cfxray.{unit} ({where})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_every_allowed_upward_import_is_still_made():
    files = module_files()
    for (module, unit), why in UPWARD.items():
        assert unit in imported_units(module, files[module]), f"stale exception ({why})"
        assert layer_of(unit) > layer_of(unit_of(module)), f"not upward, drop it ({why})"


def test_optional_dependencies_are_imported_only_where_they_are_needed():
    wrong = []
    for module, path in module_files().items():
        for name, line in imports(module, path, module_level_only=True):
            top = name.split(".")[0]
            if top in MODULE_LEVEL_OPTIONAL and not any(
                    module == allowed or module.startswith(f"{allowed}.")
                    for allowed in MODULE_LEVEL_OPTIONAL[top]):
                wrong.append(f"{path.relative_to(SRC)}:{line}: {module} imports {top} "
                             "when it is imported")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_building_the_cli_imports_no_serving_client_library():
    """`cfxray --help` stays fast and works without the clients' dependencies (kfp: see
    test_pipeline_compile.test_library_does_not_import_kfp)."""
    code = ("import sys, cfxray.cli, cfxray.serving.commands; cfxray.cli.build_parser(); "
            "print(sorted(m for m in ('tritonclient', 'gradio', 'sqlalchemy', 'fastapi', "
            "'captum', 'statsmodels', 'onnxruntime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_the_checker_sees_function_local_and_relative_imports(tmp_path):
    """The checker itself: a lazy import and a relative one are both found."""
    path = tmp_path / "networks.py"
    path.write_text("from . import classifier\n\n"
                    "def load():\n    from cfxray.train.checkpoint import load_checkpoint\n")
    assert imported_units("cfxray.models.networks", path) == {"train": 4}
    assert set(imports("cfxray.models.networks", path, module_level_only=True)) == {
        ("cfxray.models", 1), ("cfxray.models.classifier", 1)}
