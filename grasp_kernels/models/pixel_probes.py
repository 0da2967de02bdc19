"""Measuring a :class:`~grasp_kernels.models.pixel.PixelWorldModel` on held-out trajectories.

* ``one_step`` / ``h10``: RMSE of the predicted newest latent after 1 and 10 open-loop steps from the true
  window, in standardised latent units (1.0 = one latent standard deviation), beside the constant model's;
* ``probe``: how much of the true state the latents hold: an MLP (latent window -> planning state; 3 x 256,
  10000 Adam steps, :data:`PROBE_HIDDEN`, :data:`PROBE_DEPTH`) fitted on the training latents (:func:`train_probe`;
  a 2 x 128 probe of 2000 steps underfits: it read the Push-T block to 10.8 px and 17 degrees from latents
  that hold it to 4.7 px and 6 degrees), its held-out errors in physical units (PointMaze
  position and velocity in maze units; Push-T agent/block px and block angle), and the same probe read off
  the predictor's 10-step open-loop windows (``probe_h10``: the model's 10-step error in physical units);
* ``reconstruction_psnr``: the decoder's held-out PSNR (dB).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..rollouts import rollout
from .pixel import PixelWorldModel, latent_windows
from .training import _group_errors, _group_medians, adam_steps


def batches(count: int, size: int):
    """Slices of ``range(count)`` of ``size`` elements each (the last one shorter)."""
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


@torch.no_grad()
def encode_all(model: PixelWorldModel, frames: np.ndarray, batch: int = 1024) -> torch.Tensor:
    """``frames [..., S, S, 3]`` uint8 -> standardised latents ``[..., E]`` in batches (no gradients)."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = torch.cat([model.encode(flat[part]) for part in batches(len(flat), batch)])
    return out.reshape(*frames.shape[:-3], model.latent_dim)


PROBE_HIDDEN = 256
PROBE_DEPTH = 3


def probe_spec(steps: int) -> str:
    """The probe's description for a model card (what measured the ``probe`` metrics)."""
    return f"MLP {PROBE_DEPTH} x {PROBE_HIDDEN} (SiLU), {steps} Adam steps of 512 windows, lr 1e-3 cosine"


def train_probe(windows: torch.Tensor, states: torch.Tensor, steps: int, generator: torch.Generator) -> torch.nn.Module:
    """An MLP ``window [h*E] -> state [D]`` (:func:`probe_spec`), the measurement of what the latents hold,
    fitted on standardised states."""
    x = windows.reshape(-1, windows.shape[-1])
    y = states.reshape(-1, states.shape[-1])
    mean, std = y.mean(0), y.std(0).clamp_min(1e-6)
    layers: list[torch.nn.Module] = []
    width = x.shape[-1]
    for _ in range(PROBE_DEPTH):
        layers += [torch.nn.Linear(width, PROBE_HIDDEN), torch.nn.SiLU()]
        width = PROBE_HIDDEN
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, y.shape[-1]))

    def loss() -> torch.Tensor:
        index = torch.randint(0, len(x), (512,), generator=generator)
        return torch.mean((net(x[index]) - (y[index] - mean) / std) ** 2)

    adam_steps(net.parameters(), loss, steps, 1e-3, "probe", progress=False)
    net.eval()

    class Probe(torch.nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return net(w) * std + mean

    return Probe().eval()


@torch.no_grad()
def evaluate_pixel_model(
    model: PixelWorldModel, frames: np.ndarray, states: np.ndarray, actions: np.ndarray,
    probe: Optional[torch.nn.Module] = None, horizon: int = 10,
) -> dict:
    """Held-out metrics of ``model`` on trajectories ``frames [N, L+1, S, S, 3]``, ``states [N, L+1, D]``,
    ``actions [N, L, A]`` (the module docstring's metrics); ``probe``: a fitted latent-window -> state probe."""
    model = model.eval()
    latents = encode_all(model, frames)
    windows = latent_windows(latents, model.window)
    a = torch.as_tensor(actions, dtype=torch.float32)
    n, length = a.shape[:2]
    dim, e = model.state_dim, model.latent_dim

    def newest(w: torch.Tensor) -> torch.Tensor:
        return w[..., dim - e :]

    def rmse(x: torch.Tensor, y: torch.Tensor) -> float:
        return float(torch.sqrt(torch.mean((x - y) ** 2)))

    pred = model.dynamics(windows[:, :-1].reshape(-1, dim), a.reshape(n * length, -1)).reshape(n, length, dim)
    metrics: dict = {
        "one_step": {"latent_rmse": rmse(newest(pred), latents[:, 1:]),
                     "constant": rmse(latents[:, :-1], latents[:, 1:])},
    }
    starts = list(range(0, length - horizon + 1, horizon))
    if starts:
        start = torch.cat([windows[:, t] for t in starts])
        acts = torch.cat([a[:, t : t + horizon] for t in starts])
        target = torch.cat([latents[:, t + horizon] for t in starts])
        final = rollout(model.dynamics, start, acts)[:, -1]
        metrics[f"h{horizon}"] = {"latent_rmse": rmse(newest(final), target), "constant": rmse(newest(start), target)}
    recon = [model.decode(latents.reshape(-1, e)[part]) for part in batches(n * (length + 1), 2048)]
    mse = float(np.mean((np.concatenate(recon).astype(np.float64) - frames.reshape(-1, *frames.shape[-3:])) ** 2))
    metrics["reconstruction_psnr"] = float(10 * np.log10(255.0**2 / max(mse, 1e-12)))
    if probe is not None:
        read = probe(windows).numpy()
        metrics["probe"] = {**_group_errors(model.env_name, read, states),
                            "median": _group_medians(model.env_name, read, states)}
        if starts:
            true = np.concatenate([states[:, t + horizon] for t in starts])
            read = probe(final).numpy()
            metrics[f"probe_h{horizon}"] = {**_group_errors(model.env_name, read, true),
                                            "median": _group_medians(model.env_name, read, true)}
    return metrics


def format_metrics(name: str, metrics: dict) -> str:
    """One line of :func:`evaluate_pixel_model`'s metrics (or a model card's) for ``name``."""
    parts = [f"{key}: latent RMSE {metrics[key]['latent_rmse']:.3f} (constant {metrics[key]['constant']:.3f})"
             for key in ("one_step", "h10") if key in metrics]
    for key in ("probe", "probe_h10"):
        if key in metrics:
            parts.append(f"{key}: " + ", ".join(f"{k}={v:.3g}" for k, v in metrics[key].items() if k != "median"))
    parts.append(f"PSNR {metrics['reconstruction_psnr']:.1f} dB")
    return f"{name}: " + "; ".join(parts)


__all__ = ["PROBE_DEPTH", "PROBE_HIDDEN", "encode_all", "evaluate_pixel_model", "format_metrics", "probe_spec", "train_probe"]
