"""Bitwise plan equality across a change that must not change behaviour (a refactor).

Plans a fixed set of seeded configurations with every planner (GRASP with each sync rule and option,
GD, CEM, MPPI) and saves every result tensor; ``check`` replans on the current tree and compares each
tensor with ``torch.equal``. Run ``save`` on the commit before the change and ``check`` after it:

    TRITON_INTERPRET=1 python bench/plan_equality.py save /tmp/before.pt    # on the old commit
    TRITON_INTERPRET=1 python bench/plan_equality.py check /tmp/before.pt   # on the new one

GRASP runs on the reference backend and on the Triton backend (under the interpreter on a CPU). One
thread, so that the CPU matmuls take the same kernels in both runs.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Callable

import torch

from grasp_kernels import GraspConfig, GraspPlanner
from grasp_kernels.baselines import CEMConfig, CEMPlanner, GDConfig, GDPlanner, MPPIConfig, MPPIPlanner
from grasp_kernels.models import MLPDynamics
from grasp_kernels.models.zoo import load_world_model

Case = Callable[[str], dict[str, torch.Tensor]]


def _mlp(state_dim: int, action_dim: int, seed: int, **kwargs: object) -> MLPDynamics:
    torch.manual_seed(seed)
    model = MLPDynamics(state_dim, action_dim, hidden=32, **kwargs)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class _Window(torch.nn.Module):
    """A history-3 model: the mean of the window's frames through an MLP."""

    history = 3

    def __init__(self) -> None:
        super().__init__()
        self.mlp = _mlp(6, 2, 5)

    def forward(self, windows: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.mlp(windows.mean(dim=1), actions)


def _problem(batch: int, dim: int, seed: int, history: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, dim) if history == 1 else (batch, history, dim)
    return torch.randn(shape, generator=gen), torch.randn(batch, dim, generator=gen)


def _tensors(result) -> dict[str, torch.Tensor]:
    out = {name: getattr(result, name) for name in ("actions", "states", "rollout", "final_distance", "energy_history")}
    for key in ("particle", "sync_loss"):
        if key in result.info:
            out[key] = result.info[key]
    return out


def _grasp(model, action_dim: int, s0, goal, backend: str, state_weights=None, **changes) -> dict[str, torch.Tensor]:
    config = GraspConfig(horizon=6, iters=12, sync_every=4, sync_steps=3, lr_states=0.05, lr_actions=0.05,
                         goal_weight=0.1, state_noise=0.01, backend=backend).replace(**changes)
    planner = GraspPlanner(model, action_dim, config, state_weights=state_weights)
    return _tensors(planner.plan(s0, goal, plan_offset=1))


def cases() -> dict[str, Case]:
    shipped = load_world_model("pointmaze-medium")
    mlp = _mlp(5, 3, 1)
    s0, goal = _problem(3, 5, 2)
    pm0 = torch.tensor([[1.0, 1.0, 0.0, 0.0], [2.0, 3.0, 0.1, -0.1]])
    pm_goal = torch.tensor([[2.0, 1.0, 0.0, 0.0], [3.0, 2.0, 0.0, 0.0]])
    window = _Window()
    h0, hgoal = _problem(2, 6, 3, history=3)
    weights = torch.tensor([1.0, 0.5, 2.0, 0.25, 1.5])
    out: dict[str, Case] = {
        "shipped x2": lambda b: _grasp(shipped, 2, pm0, pm_goal, b, particles=2),
        "mlp plain": lambda b: _grasp(mlp, 3, s0, goal, b),
        "mlp no stop-gradient": lambda b: _grasp(mlp, 3, s0, goal, b, stop_gradient=False),
        "mlp annealed": lambda b: _grasp(mlp, 3, s0, goal, b, anneal_noise=True, goal_weight_final=0.01),
        "mlp gamma over plan": lambda b: _grasp(mlp, 3, s0, goal, b, goal_weight_final=0.01, goal_weight_schedule="plan"),
        "mlp fused": lambda b: _grasp(mlp, 3, s0, goal, b, fused_mlp=True),
        "mlp cem sync x2": lambda b: _grasp(mlp, 3, s0, goal, b, sync="cem", particles=2, cem_sync_samples=8,
                                            cem_sync_elites=3),
        "mlp cem start x2": lambda b: _grasp(mlp, 3, s0, goal, b, init_cem_steps=2, particles=2, cem_sync_samples=8,
                                             cem_sync_elites=3),
        "mlp weighted": lambda b: _grasp(mlp, 3, s0, goal, b, state_weights=weights),
        "history 3": lambda b: _grasp(window, 2, h0, hgoal, b, history=3),
        "mlp no sync": lambda b: _grasp(mlp, 3, s0, goal, b, sync_every=0),
    }
    baselines = {
        "GD": lambda: GDPlanner(mlp, 3, GDConfig(horizon=6, iters=10)).plan(s0, goal),
        "CEM": lambda: CEMPlanner(mlp, 3, CEMConfig(horizon=6, samples=16, topk=4, iters=3, seed=3)).plan(
            s0, goal, plan_offset=2),
        "MPPI": lambda: MPPIPlanner(mlp, 3, MPPIConfig(horizon=6, samples=16, iters=3, seed=3)).plan(
            s0, goal, plan_offset=2),
    }
    for name, run in baselines.items():
        out[name] = lambda b, run=run: _tensors(run()) if b == "reference" else {}
    return out


def run_all() -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    results: dict[str, torch.Tensor] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, case in cases().items():
            for backend in ("reference", "triton"):
                for key, tensor in case(backend).items():
                    results[f"{name} | {backend} | {key}"] = tensor.detach().cpu()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("save", "check"))
    parser.add_argument("path")
    args = parser.parse_args(argv)
    results = run_all()
    if args.mode == "save":
        torch.save(results, args.path)
        print(f"saved {len(results)} tensors to {args.path}")
        return 0
    before = torch.load(args.path, weights_only=True)
    differ = [k for k in before if k not in results or not torch.equal(before[k], results[k])]
    missing = [k for k in results if k not in before]
    for key in differ:
        print(f"DIFFERS: {key}")
    for key in missing:
        print(f"NEW (not in the saved run): {key}")
    print(f"{len(before) - len(differ)}/{len(before)} tensors bitwise equal")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
