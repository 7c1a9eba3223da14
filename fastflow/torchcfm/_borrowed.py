"""torchcfm's modules that fastflow does not reimplement (``models``: its MLP and UNet; ``utils``:
its plotting and torchdyn helpers). ``fastflow.torchcfm.models`` is ``torchcfm.models`` itself,
submodules included, when torchcfm is installed: a script migrated by changing its imports
(``from fastflow.torchcfm.models.unet import UNetModel``) keeps working, with torchcfm's classes
rather than copies of them."""
from __future__ import annotations

import importlib
import pkgutil
import sys


def borrow(name: str) -> None:
    """Make the module being imported as ``fastflow.torchcfm.<x>`` torchcfm's ``<x>``."""
    target = "torchcfm" + name[len(__package__):]
    try:
        real = importlib.import_module(target)
    except ImportError as exc:
        raise ImportError(f"{name} is torchcfm's {target}, which fastflow does not reimplement: install torchcfm "
                          f"(pip install torchcfm) and what it imports ({exc})") from exc
    sys.modules[name] = real  # (what the import statement returns, and binds in the package)
    for info in pkgutil.walk_packages(getattr(real, "__path__", []), target + ".", onerror=lambda _: None):
        try:
            sys.modules[name + info.name[len(target):]] = importlib.import_module(info.name)
        except Exception:  # (its own import, when asked for, raises the error)
            continue
