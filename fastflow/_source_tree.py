"""``fastflow.triton_kernels`` when fastflow runs from its source tree without being installed.

An install maps the package itself (setup.py's ``package_dir``: a wheel holds
fastflow/triton_kernels, an editable install's finder points there). In a source tree on
``sys.path`` the kernels are ../triton_kernels: a finder, consulted after every other, maps that
one name, and only when ../setup.py shows the folder is fastflow's own tree (appending the
parent folder to ``fastflow.__path__`` would make every module beside it ``fastflow.<name>``).
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

_NAME = "fastflow.triton_kernels"


class _TreeKernels(importlib.abc.MetaPathFinder):
    def __init__(self, folder: str):
        self.folder = folder

    def find_spec(self, name, path=None, target=None):
        if name != _NAME:
            return None
        return importlib.util.spec_from_file_location(name, os.path.join(self.folder, "__init__.py"),
                                                      submodule_search_locations=[self.folder])


def map_triton_kernels() -> None:
    package = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(package)
    folder = os.path.join(root, "triton_kernels")
    if (os.path.isdir(os.path.join(package, "triton_kernels")) or not os.path.isfile(os.path.join(folder, "__init__.py"))
            or not os.path.isfile(os.path.join(root, "setup.py"))):
        return
    if not any(isinstance(f, _TreeKernels) for f in sys.meta_path):
        sys.meta_path.append(_TreeKernels(folder))
