"""The lifted energy with its reshaped gradients: spec, custom op, Triton and CUDA launches."""

from .op import lifted_energy, lifted_energy_grads
from .reference import lifted_energy_ref

__all__ = ["lifted_energy", "lifted_energy_grads", "lifted_energy_ref"]
