"""Data with ground truth for explanation research: deterministic MR-like lesion phantoms."""

from .phantom import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    PhantomCase,
    ensure_phantom_dataset,
    generate_phantom,
    phantom_slice,
    write_phantom_dataset,
)

__all__ = [
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PhantomCase",
    "ensure_phantom_dataset",
    "generate_phantom",
    "phantom_slice",
    "write_phantom_dataset",
]
