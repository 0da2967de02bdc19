"""The package's layers hold: no import cycle, no import of a higher layer, and imports inside functions
only of optional third-party packages and the modules that wrap them.

Edges are the imports a module runs when it is imported: every ``import`` / ``from ... import`` at module
level, including those under ``if TYPE_CHECKING:`` and ``try:`` (a type-only import of a module that
imports this one is still a cycle in the design). Importing ``a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``; those implicit parent edges are left out, as import linters do, since every submodule
would otherwise depend on the package that re-exports it. Imports inside functions (deferred: they run on
first use) are checked separately against :data:`LATE_PACKAGES` and :data:`LATE_MODULES`: everything else
is imported at the top, where the layer check sees it.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "grasp_kernels"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# The layers, lowest first: a module may import its own layer and the layers below it. A module belongs
# to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("_checks", "result", "randomness", "backends", "actions", "_cuda", "models.mlp",
                     "models.transformer", "envs")),
    ("ops", ("ops",)),
    ("lifted math", ("memory", "lifted", "rollouts", "reference", "_problem", "cem")),
    ("planner", ("plan_state", "sync", "presets", "config", "schedules", "compiled", "graphs", "sizing", "planner")),
    ("planners, world-model training", ("baselines", "distributed", "mpc", "integrations", "models")),
    ("quality", ("quality", "pixel_tasks", "plotting")),
    ("applications", ("demo", "cli", "__main__", "")),
]

# Third-party packages that may be imported inside a function: optional at install (Triton, simulators,
# plotting, progress bars) or seconds to import (torch._dynamo, only for compile=True).
LATE_PACKAGES = frozenset({"triton", "mujoco", "gymnasium", "gymnasium_robotics", "gym_pusht", "pymunk", "pygame",
                           "cv2", "matplotlib", "tqdm", "torch._dynamo", "safetensors"})
# Package modules that exist to wrap an optional dependency (Triton, the compiled CUDA module), imported on
# first use so that the package imports without them.
LATE_MODULES = ("ops._triton_common", "ops._mlp_triton", "ops.*.triton_kernel", "ops.*.cuda_launch", "_cuda")


# Owed violations, each still a violation (checked), so the lists can only shrink; none are owed now (the fused
# MLP ops' specifications, the planner's own math, live with the tests).
KNOWN_UPWARD: frozenset[tuple[str, str]] = frozenset()
KNOWN_LATE: frozenset[tuple[str, str]] = frozenset()


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of ``module`` (``grasp_kernels.x.y``): its longest matching prefix."""
    name = module[len(PACKAGE) + 1:] if module != PACKAGE else ""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = name == prefix or (prefix and name.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layout.py LAYERS: add it where it belongs")
    return best


def is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":``: runs only when the module is the program (``python -m``), never on import,
    so its imports are the entry point's, not the module's."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and any(isinstance(c, ast.Constant) and c.value == "__main__"
                                                  for c in test.comparators))


def module_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements executed at import time (module body, if/try blocks; not function bodies, not the
    ``__main__`` entry point)."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif is_main_guard(node):
            continue
        elif isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "finalbody", [])
            todo += [stmt for handler in getattr(node, "handlers", []) for stmt in handler.body]
    return found


def resolve(module: str, is_package: bool, node: ast.stmt, known: set[str]) -> set[str]:
    """The package modules an import statement of ``module`` names."""
    targets = set()
    if isinstance(node, ast.Import):
        targets = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:  # "from pkg import submodule" names the submodule, else an attribute of base
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in known else base)
    return {t for t in targets if t in known}


# the compiled CUDA module (grasp_kernels/_cuda*.so, built where nvcc exists) is a module too
COMPILED_MODULES = (f"{PACKAGE}._cuda",)


def import_graph(root: Path = ROOT / PACKAGE) -> dict[str, set[str]]:
    paths = sorted(root.rglob("*.py"))
    known = {module_name(p) for p in paths} | set(COMPILED_MODULES)
    graph = {}
    for path in paths:
        name = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = set()
        for node in module_level_imports(tree):
            edges |= resolve(name, path.name == "__init__.py", node, known)
        graph[name] = edges - {name}
    return graph


def deferred_imports(root: Path = ROOT / PACKAGE) -> list[tuple[str, int, str]]:
    """``(module, line, imported name)`` of every import inside a function of the package (relative imports
    resolved to absolute names)."""
    paths = sorted(root.rglob("*.py"))
    found = []
    for path in paths:
        name = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    found += [(name, node.lineno, alias.name) for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        anchor = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                        anchor = anchor[: len(anchor) - (node.level - 1)]
                        base = ".".join(anchor + ([base] if base else []))
                    found += [(name, node.lineno, f"{base}.{alias.name}" if base.startswith(PACKAGE) and
                               f"{base}.{alias.name}".replace(".", "/") in _module_paths(root) else base)
                              for alias in node.names]
    return found


def _module_paths(root: Path) -> set[str]:
    return {name.replace(".", "/") for name in {module_name(p) for p in root.rglob("*.py")} | set(COMPILED_MODULES)}


def late_import_allowed(target: str) -> bool:
    """An import inside a function is allowed for :data:`LATE_PACKAGES` and :data:`LATE_MODULES` only."""
    if target == PACKAGE or target.startswith(PACKAGE + "."):
        name = target[len(PACKAGE) + 1:]
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in LATE_MODULES)
    return any(target == package or target.startswith(package + ".") for package in LATE_PACKAGES)


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 40 and f"{PACKAGE}.planner" in graph[PACKAGE]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_a_higher_layer():
    graph = import_graph()
    edges = {(a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)}
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, b in sorted(edges - KNOWN_UPWARD)]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)
    assert KNOWN_UPWARD <= edges, f"fixed, remove from KNOWN_UPWARD: {sorted(KNOWN_UPWARD - edges)}"


def test_imports_inside_functions_are_optional_dependencies_only():
    found = deferred_imports()
    late = [f"{module}:{line} imports {target} inside a function" for module, line, target in found
            if not late_import_allowed(target) and (module, target) not in KNOWN_LATE]
    assert KNOWN_LATE <= {(module, target) for module, _, target in found}, "fixed: shrink KNOWN_LATE"
    print(f"{len(found)} imports inside functions, all of optional dependencies")
    assert not late, ("import these at the top (or add an optional dependency to LATE_PACKAGES / LATE_MODULES):\n"
                      + "\n".join(late))


def test_layer_checks_catch_what_they_should():
    """The checkers themselves: a deferred import of a package module or of a required dependency is caught,
    one of an optional backend is not; layers rank by the longest prefix."""
    assert late_import_allowed("triton.language") and late_import_allowed(f"{PACKAGE}.ops.state_step.triton_kernel")
    assert not late_import_allowed(f"{PACKAGE}.quality") and not late_import_allowed("numpy")
    assert layer_of(f"{PACKAGE}.models.mlp") < layer_of(f"{PACKAGE}.ops.lifted_energy.op")
    assert layer_of(f"{PACKAGE}.models.training") > layer_of(f"{PACKAGE}.planner") > layer_of(f"{PACKAGE}.lifted")
    assert layer_of(f"{PACKAGE}.demo") > layer_of(f"{PACKAGE}.quality")


def test_cycle_finder_finds_cycles(tmp_path):
    """The checker itself: a type-only back edge and a relative-import cycle are both found."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nA = 1\n")
    (pkg / "b.py").write_text("from . import a\nB = 2\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("def f():\n    from .. import b  # on first use: not an edge\n"
                                     "if __name__ == '__main__':\n    from .. import a  # the entry point: not an edge\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        graph = import_graph(pkg)
    finally:
        ROOT = saved
    assert graph[f"{PACKAGE}.sub.c"] == set()
    cycle = find_cycle(graph)
    assert cycle is not None and set(cycle) == {f"{PACKAGE}.a", f"{PACKAGE}.b"}
    graph[f"{PACKAGE}.a"].clear()
    assert find_cycle(graph) is None
