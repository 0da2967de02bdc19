"""The ops' scalar families, one frozen object each: :class:`AdamHyper` (Adam's constants) and
:class:`NoiseCounters` (the Philox key and counters of in-kernel noise).

They travel as objects through the public functions, the specifications, the planner and the launchers.
Only the ``torch.library`` schemas, which take flat scalars, and the compiled module's calls take them
apart (:meth:`AdamHyper.flat`, :meth:`NoiseCounters.flat`); the op bodies rebuild them, which checks
them. Per-call values stay separate arguments beside them: the 1-based Adam ``step`` (a 0-d tensor
under ``torch.compile``), the noise sigma ``noise_std``, an explicit ``noise`` tensor and a ``generator``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from .._checks import check_int, check_scalar, check_tensor

SEED_LIMIT = 2**63


@dataclasses.dataclass(frozen=True)
class AdamHyper:
    """Adam's constants, the formulas of ``torch.optim.Adam`` (no weight decay, no amsgrad).

    Attributes:
        lr: learning rate, >= 0.
        beta1, beta2: decay rates of the first and second moments, in [0, 1).
        eps: added to the root of the second moment, >= 0.

    Checked when built (ValueError / TypeError naming the field); the values are stored as floats.
    """

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", check_scalar("lr", self.lr, minimum=0.0))
        object.__setattr__(self, "eps", check_scalar("eps", self.eps, minimum=0.0))
        for name in ("beta1", "beta2"):
            beta = check_scalar(name, getattr(self, name), minimum=0.0)
            if beta >= 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta}")
            object.__setattr__(self, name, beta)

    def flat(self) -> tuple[float, float, float, float]:
        """``(lr, beta1, beta2, eps)``: the order of the ``torch.ops.grasp`` schemas and the compiled module."""
        return self.lr, self.beta1, self.beta2, self.eps

    def with_lr(self, lr: float) -> "AdamHyper":
        """The same constants with learning rate ``lr``."""
        return dataclasses.replace(self, lr=lr)


@dataclasses.dataclass(frozen=True)
class NoiseCounters:
    """Where the in-kernel Langevin noise of a call comes from: element ``(b, t, d)`` of its noise
    ``[B, T-1, D]`` is the normal of Philox key ``seed`` at counter ``base + b * stride + t*D + d``
    (:mod:`grasp_kernels.randomness`).

    Attributes:
        seed: the Philox key, an int in [0, 2**63); None: drawn per call from the call's generator, or
            from torch's default CPU generator (:mod:`grasp_kernels.ops._dispatch`). Vary it per iteration.
        base: the counter of the batch's first element, >= 0 (a slice of a bigger batch, or a chunk of a
            longer horizon, passes its global position).
        stride: the counters per plan; None: ``(T-1)*D``, the plan's own rows (a time chunk passes the
            full horizon's).

    Checked when built; :meth:`for_states` checks them against a call's states.
    """

    seed: Optional[int] = None
    base: int = 0
    stride: Optional[int] = None

    def __post_init__(self) -> None:
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT):
            raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
        object.__setattr__(self, "base", check_int("NoiseCounters.base", self.base, minimum=0))
        if self.stride is not None:
            object.__setattr__(self, "stride", check_int("NoiseCounters.stride", self.stride, minimum=0))

    def for_states(self, states: torch.Tensor) -> "NoiseCounters":
        """These counters for a call on ``states [B, T+1, D]``: the stride defaulted to ``(T-1)*D`` and checked.

        A stride below ``(T-1)*D`` would give plans overlapping counters (correlated noise; 0: the same
        noise in every plan) and is rejected for ``B > 1``; the last counter must stay below ``2**63``."""
        batch, rows, dim = check_tensor("states", states, ndim=3, dtypes=None).shape
        span = max(rows - 2, 0) * dim
        stride = span if self.stride is None else self.stride
        if batch > 1 and stride < span:
            raise ValueError(f"NoiseCounters.stride must be >= {span} ((T-1)*D, the counters of one plan) for "
                             f"B = {batch} plans, got {stride}")
        if self.base + max(batch - 1, 0) * stride + span >= SEED_LIMIT:
            raise ValueError(f"NoiseCounters.base + (B-1) * stride + (T-1)*D must stay below 2**63, got base "
                             f"{self.base}, stride {stride} for B = {batch}, (T-1)*D = {span}")
        return self if stride == self.stride else dataclasses.replace(self, stride=stride)

    def with_seed(self, seed: int) -> "NoiseCounters":
        """The same counters with Philox key ``seed``."""
        return dataclasses.replace(self, seed=seed)

    def flat(self) -> tuple[int, int, int]:
        """``(seed, base, stride)`` of counters whose seed and stride are set (:meth:`for_states`,
        :meth:`with_seed`): the order of the ``torch.ops.grasp`` schemas."""
        if self.seed is None or self.stride is None:
            raise ValueError(f"NoiseCounters.flat needs a seed and a stride, got {self}")
        return self.seed, self.base, self.stride
