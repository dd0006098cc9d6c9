"""Data with ground truth for explanation research (deterministic MR-like lesion phantoms), and the pieces that let a
run skip the cases it cannot read."""

from .phantom import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    PhantomCase,
    ensure_phantom_dataset,
    generate_phantom,
    phantom_slice,
    write_phantom_dataset,
)
from .unreadable import ReadableCases, ReadableCasesCollate, SkipUnreadableCases

__all__ = [
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PhantomCase",
    "ensure_phantom_dataset",
    "generate_phantom",
    "phantom_slice",
    "write_phantom_dataset",
    "ReadableCases",
    "ReadableCasesCollate",
    "SkipUnreadableCases",
]
