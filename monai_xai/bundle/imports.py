"""A bundle's own Python code (the model-zoo ``scripts/`` package), importable while the bundle is read and run.

``python -m monai.bundle run`` started in a bundle folder imports ``scripts.*`` because Python puts the working
folder on ``sys.path``; every other front door (``monai-xai explain`` run from anywhere, the study, the sanity
checks, MONAI Deploy) needs the bundle root on ``sys.path`` while it builds and runs the network. Two bundles often
both call their package ``scripts``, so modules of that name imported from another folder are unloaded first, as
MONAI Label's bundle tasks do.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["bundle_imports"]


def _own_top_level_names(root: Path) -> set[str]:
    """The importable names a bundle folder holds: its packages (folders with ``__init__.py``) and modules."""
    names = {item.name for item in root.iterdir() if item.is_dir() and (item / "__init__.py").is_file()}
    return names | {item.stem for item in root.glob("*.py")}


def _unload_others(names: set[str], root: Path) -> None:
    """Forget the modules named ``names`` (and their submodules) that were imported from outside ``root``."""
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] not in names:
            continue
        source = getattr(module, "__file__", None)
        if source is None or root not in Path(source).resolve().parents:
            del sys.modules[module_name]


@contextmanager
def bundle_imports(bundle_root: str | Path) -> Iterator[None]:
    """Inside the block the bundle's own modules (``scripts.*``) import from ``bundle_root``, first on ``sys.path``.

    Args:
        bundle_root: the bundle folder (the one holding ``configs/`` and, if any, ``scripts/``).
    """
    root = Path(bundle_root).resolve()
    entry = str(root)
    _unload_others(_own_top_level_names(root), root)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        sys.path.remove(entry)
