"""Every dotted name the package and the benchmarks read from torch, triton and numpy exists in the
installed versions, and every call of such a name binds to its signature (argument count, keyword names).

The CUDA-only paths (graph capture, the sync phase's capture check, device timing) never run on the
CPU machines that test this project, so a misspelt ``torch.cuda.*`` there would only surface on a GPU,
as an AttributeError in the middle of a plan. This reads the source instead of running it: each chain
``alias.a.b`` whose root is an imported torch/triton/numpy name (``import torch``, ``import triton.language
as tl``, ``from torch.cuda import graph``; each import itself too) is resolved attribute by attribute
(importing submodules where needed); where such a name is called, the call's positional count and keyword
names must bind to ``inspect.signature`` of what it resolves to (skipped for builtins without one and for
calls with ``*args``/``**kwargs``). Assignments (``torch._dynamo.config.x = ...``) are not checked.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from types import ModuleType
from typing import Optional

import pytest

import grasp_kernels  # noqa: F401  (registers torch.ops.grasp_kernels.*)

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "grasp_kernels").rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py")) + sorted(
    (ROOT / "tests").rglob("*.py"))
CHECKED = ("torch", "triton", "numpy")


def module_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted path, for every import of a checked package in the file."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root in CHECKED:
                    aliases[alias.asname or root] = alias.name if alias.asname else root
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in CHECKED:
                for alias in node.names:
                    if alias.name != "*":
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def dotted_reads(tree: ast.Module) -> list[tuple[int, str, list[str]]]:
    """(line, root name, attributes) of every outermost read ``name.a.b...``."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    reads = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or isinstance(parents.get(node), ast.Attribute):
            continue
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            continue
        attrs, base = [], node
        while isinstance(base, ast.Attribute):
            attrs.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name):
            reads.append((node.lineno, base.id, attrs[::-1]))
    return sorted(reads)


def lookup(path: str) -> tuple[object, Optional[str]]:
    """(the object at the dotted ``path``, None), or (None, the first part that does not exist)."""
    parts = path.split(".")
    try:
        obj: object = importlib.import_module(parts[0])
    except ImportError:
        return None, parts[0]
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        if isinstance(obj, ModuleType):
            try:
                obj = importlib.import_module(".".join(parts[: i + 1]))
                continue
            except ImportError:
                pass
        return None, ".".join(parts[: i + 1])
    return obj, None


def resolve(path: str) -> Optional[str]:
    """None if the dotted ``path`` exists, else the first part that does not."""
    return lookup(path)[1]


def call_mismatch(func: object, call: ast.Call) -> Optional[str]:
    """Why ``call``'s arguments cannot bind to ``func``'s signature, or None (also when unknown)."""
    if any(isinstance(arg, ast.Starred) for arg in call.args) or any(kw.arg is None for kw in call.keywords):
        return None
    try:
        signature = inspect.signature(func)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*([None] * len(call.args)), **{kw.arg: None for kw in call.keywords})
    except TypeError as exc:
        return str(exc)
    return None


def dotted_calls(tree: ast.Module) -> list[tuple[int, str, list[str], ast.Call]]:
    """(line, root name, attributes, call) of every call ``name(...)`` or ``name.a.b(...)``."""
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)):
            attrs, base = [], node.func
            while isinstance(base, ast.Attribute):
                attrs.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name):
                calls.append((node.lineno, base.id, attrs[::-1], node))
    return sorted(calls, key=lambda c: c[:3])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dotted_names_exist(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases = module_aliases(tree)
    missing = [f"{path.name}: import of {full} ({bad} does not exist)"
               for full in sorted(set(aliases.values())) if (bad := resolve(full)) is not None]
    for line, root, attrs in dotted_reads(tree):
        if root not in aliases:
            continue
        full = ".".join([aliases[root], *attrs])
        bad = resolve(full)
        if bad is not None:
            missing.append(f"{path.name}:{line}: {full} ({bad} does not exist)")
    for line, root, attrs, call in dotted_calls(tree):
        if root not in aliases:
            continue
        full = ".".join([aliases[root], *attrs])
        func, bad = lookup(full)
        why = None if bad is not None else call_mismatch(func, call)
        if why is not None:
            missing.append(f"{path.name}:{line}: {full}(...): {why}")
    assert not missing, "\n".join(missing)


def test_the_check_finds_a_misspelt_name() -> None:
    tree = ast.parse("import torch\nimport triton.language as tl\n"
                     "torch.cuda.is_current_stream_capturing()\ntorch.cuda.no_such_function()\ntl.no_such_op\n")
    aliases = module_aliases(tree)
    bad = [resolve(".".join([aliases[root], *attrs])) for _, root, attrs in dotted_reads(tree)]
    assert bad == [None, "torch.cuda.no_such_function", "triton.language.no_such_op"]


def test_the_check_finds_a_misspelt_from_import_and_its_calls() -> None:
    tree = ast.parse("from torch.cuda import no_such_function, synchronize\nfrom torch.testing import assert_close\n"
                     "assert_close(a)\n")
    aliases = module_aliases(tree)
    assert [resolve(full) for full in sorted(aliases.values())] == [
        "torch.cuda.no_such_function", None, None]
    (_, root, attrs, call), = dotted_calls(tree)
    assert "missing" in call_mismatch(lookup(".".join([aliases[root], *attrs]))[0], call)


def test_the_check_finds_a_wrong_keyword() -> None:
    tree = ast.parse("import torch\ntorch.cuda.graph(g, stream=s)\ntorch.cuda.graph(g, strem=s)\n"
                     "torch.testing.assert_close(a)\n")
    why = [call_mismatch(lookup(".".join(["torch", *attrs]))[0], call) for _, _, attrs, call in dotted_calls(tree)]
    assert why[0] is None and "strem" in why[1] and "missing" in why[2]
