"""The op table (grasp_kernels/ops/table.py) is the one hand-kept list of the ops: it names what each op folder
holds, and every list of ops is derived from it and covers it (the tests' launches, the launch counter, the
lowering specs, the sanitizer's cases, the op benchmarks)."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import _kernels  # noqa: E402
import _lowering_specs  # noqa: E402
import grasp_kernels.ops as ops  # noqa: E402
from grasp_kernels.ops import _cuda_common  # noqa: E402
from grasp_kernels.ops.table import OP_TABLE, op_entry  # noqa: E402

OPS_DIR = ROOT / "grasp_kernels" / "ops"


def functions_of(path: Path) -> set[str]:
    """The names of the module-level functions of a source file (no import: Triton is optional)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_the_table_lists_every_op_folder_once():
    folders = {path.parent.name for path in OPS_DIR.glob("*/op.py")}
    names = [op.name for op in OP_TABLE]
    assert sorted(names) == sorted(folders) and len(set(names)) == len(names)


@pytest.mark.parametrize("op", OP_TABLE, ids=lambda op: op.name)
def test_an_entry_names_what_its_folder_holds(op):
    for name in op.public:
        assert name in ops.__all__ and callable(getattr(ops, name)), name
    assert op.public_function() is getattr(ops, op.public[0])
    assert hasattr(torch.ops.grasp, op.custom_op), op.custom_op
    assert callable(op.spec_function())
    assert "launcher" in functions_of(OPS_DIR / op.name / "op.py")
    assert set(op.backends) <= {"triton", "cuda"} and "triton" in op.backends
    assert set(op.triton_kernels) <= functions_of(OPS_DIR / op.name / "triton_kernel.py")
    cuda_launch = OPS_DIR / op.name / "cuda_launch.py"
    assert cuda_launch.exists() == ("cuda" in op.backends) == bool(op.cuda_entry_points)
    for name in op.cuda_entry_points:
        assert f"mod.{name}(" in cuda_launch.read_text(encoding="utf-8"), name
        if _cuda_common.available():
            assert callable(getattr(_cuda_common.module(), name)), name


def test_op_entry_names_the_table_when_an_op_is_missing():
    assert op_entry("state_step").custom_op == "state_step"
    with pytest.raises(KeyError, match="no op 'nope'.*state_step"):
        op_entry("nope")
    with pytest.raises(ValueError, match="no 'cuda' launch"):
        op_entry("fused_mlp_sync").launcher("cuda")


def test_the_lists_of_ops_derive_from_the_table():
    import _launches

    both = [op.name for op in OP_TABLE if set(op.backends) == {"triton", "cuda"}]
    assert list(_kernels.OPS) == both
    assert set(_launches._CUDA_ENTRY_POINTS) == {name for op in OP_TABLE for name in op.cuda_entry_points}


def test_every_consumer_covers_every_op():
    """The per-op data kept beside the derived lists (sanitizer cases, benchmark inputs, lowering
    configurations) has an entry for each op of the table, and for nothing else."""
    os.environ.setdefault("TRITON_INTERPRET", "1")  # set by conftest without CUDA already
    import _op_cases
    import sanitize_kernels

    names = {op.name for op in OP_TABLE}
    assert set(sanitize_kernels.CASES) == names
    assert set(_op_cases.BENCHES) | set(_op_cases.TIMED_IN_PLANS) == names
    assert not set(_op_cases.BENCHES) & set(_op_cases.TIMED_IN_PLANS)
    assert list(_op_cases.OPS) == [op.public[0] for op in OP_TABLE if op.name in _op_cases.BENCHES]
    kernels = {name for op in OP_TABLE for name in op.triton_kernels} | {"sum_partials_kernel"}
    assert set(_lowering_specs.CONFIGS) == kernels
    grouped = [op.name for op in _lowering_specs.kernel_ops()] + list(_lowering_specs.FUSED_MLP_OPS)
    assert sorted(grouped) == sorted(names)
