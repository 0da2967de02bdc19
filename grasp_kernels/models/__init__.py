"""World models."""

from .mlp import MLPDynamics

__all__ = ["MLPDynamics"]
