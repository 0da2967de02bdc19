"""A small DINO-WM-shaped world model on patch tokens: ``[N, h, P, E]`` frames + action -> ``[N, P, E]``."""

from __future__ import annotations

import torch
from torch import nn


class PatchTransformerDynamics(nn.Module):
    """Patch-token transformer dynamics with a history window, shaped like DINO-WM's predictor.

    Each of the ``h`` frames is ``P`` patch tokens of width ``E`` (DINO-WM: 196 x 384 from DINOv2).
    Tokens are projected to ``width``, get learned patch and frame embeddings, the action embedding
    is added to every token of the newest frame, and a pre-norm transformer encoder attends over all
    ``h * P`` tokens with a frame-causal mask (a token sees its own and older frames). The newest
    frame's outputs are projected back to ``E`` as a residual: ``s' = s_t + delta_scale * f(...)``.
    Random weights by default (a workload and a test model); train it like any ``nn.Module``.

    Args:
        num_patches: ``P``.
        embed_dim: ``E``.
        action_dim: ``A`` (``k * A_env`` for action blocks).
        history: ``h``, frames per input (the planner's ``GraspConfig.history`` must match).
        width: transformer width.
        depth: encoder layers.
        heads: attention heads (must divide ``width``).
        mlp_ratio: feed-forward width / ``width``.
        delta_scale: scale of the residual update (keeps a random model's steps small and smooth).

    Shapes:
        ``forward(states, actions)``: ``states [N, h, P, E]`` (``[N, P, E]`` accepted for ``h = 1``),
        ``actions [N, A]`` -> ``[N, P, E]``.
    """

    def __init__(
        self,
        num_patches: int,
        embed_dim: int,
        action_dim: int,
        history: int = 3,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        delta_scale: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("num_patches", num_patches), ("embed_dim", embed_dim), ("action_dim", action_dim),
                            ("history", history), ("width", width), ("depth", depth), ("heads", heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if width % heads:
            raise ValueError(f"heads ({heads}) must divide width ({width})")
        self.num_patches, self.embed_dim, self.action_dim, self.history = num_patches, embed_dim, action_dim, history
        self.delta_scale = float(delta_scale)
        self.token_in = nn.Linear(embed_dim, width)
        self.action_in = nn.Sequential(nn.Linear(action_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.patch_pos = nn.Parameter(0.02 * torch.randn(num_patches, width))
        self.frame_pos = nn.Parameter(0.02 * torch.randn(history, width))
        layer = nn.TransformerEncoderLayer(
            width, heads, int(width * mlp_ratio), dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.token_out = nn.Linear(width, embed_dim)
        frame_of_token = torch.arange(history).repeat_interleave(num_patches)
        # True = masked: a token attends to tokens of its own and older frames only
        self.register_buffer("mask", frame_of_token.view(1, -1) > frame_of_token.view(-1, 1), persistent=False)

    @property
    def state_shape(self) -> tuple[int, int]:
        """``S = (P, E)``."""
        return (self.num_patches, self.embed_dim)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``states [N, h, P, E]``, ``actions [N, A]`` -> next tokens ``[N, P, E]``."""
        h, p, e = self.history, self.num_patches, self.embed_dim
        if h == 1 and states.dim() == 3:
            states = states.unsqueeze(1)
        if states.dim() != 4 or tuple(states.shape[1:]) != (h, p, e):
            raise ValueError(
                f"states must be [N, history={h}, P={p}, E={e}] windows, got shape {tuple(states.shape)} "
                "(is GraspConfig.history set to the model's history?)"
            )
        if actions.dim() != 2 or actions.shape != (states.shape[0], self.action_dim):
            raise ValueError(f"actions must be [N={states.shape[0]}, A={self.action_dim}], got shape {tuple(actions.shape)}")
        n = states.shape[0]
        tokens = self.token_in(states) + self.patch_pos + self.frame_pos.view(1, h, 1, -1)
        conditioned = tokens[:, -1:] + self.action_in(actions).view(n, 1, 1, -1)  # the action enters the newest frame
        tokens = torch.cat([tokens[:, :-1], conditioned], dim=1)
        # is_causal=False: the frame-causal mask is given explicitly; without the hint nn.TransformerEncoder
        # compares the mask with a causal one on every call, a device-to-host sync (and a torch.compile graph break)
        out = self.encoder(tokens.reshape(n, h * p, -1), mask=self.mask, is_causal=False)
        newest = self.norm(out[:, -p:])
        return states[:, -1] + self.delta_scale * self.token_out(newest)
