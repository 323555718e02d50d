"""The package's layers point one way (docs/ARCHITECTURE.md): a module imports only from its own layer or
the layers below it, at the top of a file or inside a function alike."""

from __future__ import annotations

import ast
from pathlib import Path

import tinylm

ROOT = Path(tinylm.__file__).parent
LAYERS = [
    ["errors", "io"],
    ["tokenizer"],
    ["data"],
    ["tasks"],
    ["models"],
    ["infer"],
    ["eval", "interop", "ngram", "ime", "vectors"],
    ["train", "scaling"],
    ["serve"],
    ["core"],
    ["cli", "pipeline", "__init__"],
]
"""Bottom to top; each entry is a top-level module or package of tinylm."""
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def part(path: Path) -> str:
    """The top-level module or package of tinylm a source file belongs to."""
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def imported_parts(path: Path) -> set[str]:
    """The top-level parts of tinylm that a file imports from."""
    package = ["tinylm", *path.relative_to(ROOT).parent.parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = [*base, *(node.module.split(".") if node.module else [])]
            names = [target + [a.name] for a in node.names] if len(target) == 1 else [target]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        else:
            continue
        found |= {n[1] for n in names if n[0] == "tinylm" and len(n) > 1}
    return found


def test_every_part_has_a_layer():
    parts = {part(p) for p in ROOT.rglob("*.py")}
    assert parts <= set(RANK), f"give these a layer: {sorted(parts - set(RANK))}"


def test_imports_point_down_only():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        here = part(path)
        for target in imported_parts(path) - {here}:
            if RANK.get(target, -1) > RANK[here]:
                upward.append(f"{path.relative_to(ROOT)} imports tinylm.{target}")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)
