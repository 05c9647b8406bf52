"""The package's layers import one way: base -> data -> model -> sampling -> the pipeline, trainer and scripts."""

from __future__ import annotations

import ast
from pathlib import Path

import genvs_ns

ROOT = Path(genvs_ns.__file__).parent
BASE = {"genvs_ns.errors", "genvs_ns.geometry", "genvs_ns.cpu_runtime", "genvs_ns.checks"}
LAYERS = ["genvs_ns.data", "genvs_ns.model", "genvs_ns.sampling"]


def _layer(module: str) -> int:
    if module in BASE or module == "genvs_ns":
        return 0
    for rank, prefix in enumerate(LAYERS, start=1):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return len(LAYERS) + 1  # pipeline, trainer, config, evaluation helpers, console scripts


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):  # function-level and TYPE_CHECKING imports included
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genvs_ns"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("genvs_ns")}
    return found


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        for imported in _imports(path):
            if _layer(imported) > _layer(module):
                upward.append(f"{module} -> {imported}")
    assert not upward, upward
    assert _layer("genvs_ns.model.genvs_model") == 2 and _layer("genvs_ns.pipeline") == 4  # the rule has teeth
