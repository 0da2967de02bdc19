"""A residual MLP dynamics model, the usual state-based world model: ``s' = s + f(s, a)``."""

from __future__ import annotations

import torch
from torch import nn


class MLPDynamics(nn.Module):
    """Residual MLP world model on normalised inputs.

    ``s' = s + delta_scale * f([(s - state_mean) / state_std, (a - action_mean) / action_std])`` with
    ``f`` an MLP of ``depth`` hidden layers of width ``hidden``. The normalisation statistics are
    buffers (saved with the weights), identity by default.

    Args:
        state_dim: ``D``.
        action_dim: ``A``.
        hidden: width of the hidden layers.
        depth: number of hidden layers (>= 1).
        activation: ``nn.Module`` class of the nonlinearity.
    """

    def __init__(
        self, state_dim: int, action_dim: int, hidden: int = 256, depth: int = 2, activation: type[nn.Module] = nn.SiLU
    ) -> None:
        super().__init__()
        for name, value in (("state_dim", state_dim), ("action_dim", action_dim), ("hidden", hidden), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.state_dim = state_dim
        self.action_dim = action_dim
        layers: list[nn.Module] = []
        width = state_dim + action_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), activation()]
            width = hidden
        layers.append(nn.Linear(width, state_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.register_buffer("action_mean", torch.zeros(action_dim))
        self.register_buffer("action_std", torch.ones(action_dim))
        self.register_buffer("delta_scale", torch.ones(state_dim))

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``states [N, D]``, ``actions [N, A]`` -> next states ``[N, D]``."""
        inputs = torch.cat(
            [(states - self.state_mean) / self.state_std, (actions - self.action_mean) / self.action_std], dim=-1
        )
        return states + self.delta_scale * self.net(inputs)
