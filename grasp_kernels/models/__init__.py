"""World models."""

from .mlp import MLPDynamics
from .transformer import PatchTransformerDynamics

__all__ = ["MLPDynamics", "PatchTransformerDynamics"]
