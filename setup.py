"""fastflow: fused kernels for the hot loops of flow-matching models.

``pip install .`` / ``pip install -e .`` install the Python package and build the compiled
backends (``fastflow._C``, torch-free C++ / CUDA in ``csrc/``) with CMake + ninja:

- the CPU part wherever a C++ compiler exists;
- the CUDA part when ``nvcc`` is found and torch is CUDA-enabled (when torch cannot be
  imported at build time, as in an isolated build, an installed NVIDIA driver stands in
  for it). ``FASTFLOW_CUDA=1`` forces the CUDA part, ``FASTFLOW_CUDA=0`` skips it;
  ``FASTFLOW_CUDA_ARCHS`` sets CMAKE_CUDA_ARCHITECTURES (default "80;90");
- ``FASTFLOW_BUILD=0`` skips the compiled part altogether;
- ``FASTFLOW_CUDA_EMULATOR=1`` also builds ``fastflow._C_cuda_emu``, the CUDA kernels compiled for
  the host and run by the tests' CUDA emulator (scripts/setup.sh sets it; tests only).

A failed optional build leaves a working pure-Python install (backends ``reference`` and
``triton``) and prints a warning saying why (pip shows it with ``-v``); it also leaves
``fastflow/BUILD_FAILED.txt``, so that ``import fastflow`` warns too. CMake builds in
``build/setup-*`` of the source tree, incrementally; a changed compiler, or a failed build,
starts that folder afresh (CMake would keep the compiler it first found).
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


def _warn(msg):
    bar = "!" * 78
    print(f"\n{bar}\nfastflow: WARNING: {msg}\n{bar}\n", file=sys.stderr, flush=True)


def _env_flag(name):
    v = os.environ.get(name)
    if v is None or v.strip() == "":
        return None
    return v.strip().lower() not in ("0", "off", "false", "no")


def _find_nvcc():
    nvcc = shutil.which("nvcc")
    if nvcc:
        return nvcc
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return None


def _want_cuda():
    """(build the CUDA part?, why) from FASTFLOW_CUDA, nvcc and torch."""
    forced = _env_flag("FASTFLOW_CUDA")
    if forced is False:
        return False, "FASTFLOW_CUDA=0"
    nvcc = _find_nvcc()
    if forced:
        return True, "FASTFLOW_CUDA=1"
    if not nvcc:
        return False, "nvcc not found"
    try:
        import torch  # noqa: F401  (only to ask whether it is CUDA-enabled)
        if torch.version.cuda is None:
            return False, "torch is not CUDA-enabled"
        return True, f"nvcc and CUDA torch {torch.version.cuda}"
    except Exception:
        if os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi"):
            return True, "nvcc and an NVIDIA driver (torch not importable at build time)"
        return False, "torch not importable at build time and no NVIDIA driver found"


def _cmake():
    exe = shutil.which("cmake")
    if exe:
        return exe
    try:
        import cmake  # the PyPI package
        return os.path.join(cmake.CMAKE_BIN_DIR, "cmake")
    except Exception:
        return None


class CMakeBuild(build_ext):
    def run(self):
        for ext in self.extensions:
            self.build_extension(ext)

    def build_extension(self, ext):
        if _env_flag("FASTFLOW_BUILD") is False:
            _warn("FASTFLOW_BUILD=0: fastflow._C not built; backends 'cpu' and 'cuda' are unavailable")
            return
        out_dir = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
        failed_marker = os.path.join(out_dir, "BUILD_FAILED.txt")
        if os.path.exists(failed_marker):
            os.remove(failed_marker)
        cmake = _cmake()
        if cmake is None:
            self._failed(out_dir, failed_marker, "cmake not found: fastflow._C not built (pip install cmake ninja, "
                         "then reinstall); backends 'cpu' and 'cuda' are unavailable")
            return
        cuda, why = _want_cuda()
        # a CUDA build that fails, forced or not, falls back to the CPU part (and says so)
        attempts = [True, False] if cuda else [False]
        errors = []
        for with_cuda in attempts:
            try:
                self._cmake_build(cmake, out_dir, with_cuda)
                if cuda and not with_cuda:
                    _warn(f"the CUDA part of fastflow._C failed to build ({why}); built the CPU part only "
                          f"(backend 'cuda' unavailable). Error:\n{errors[-1]}")
                elif not cuda:
                    print(f"fastflow: built fastflow._C without CUDA ({why})")
                return
            except (subprocess.CalledProcessError, OSError) as exc:
                errors.append(f"{exc}\n{getattr(exc, 'output', '') or ''}"[-4000:])
        self._failed(out_dir, failed_marker, "fastflow._C failed to build; installed the pure-Python package "
                     f"(backends 'reference' and 'triton'). Last error:\n{errors[-1]}")

    @staticmethod
    def _failed(out_dir, failed_marker, message):
        """Warn, remove a module an earlier build left (it would not match these sources) and leave
        the marker that fastflow.csrc_backend reads, so that ``import fastflow`` warns too."""
        _warn(message)
        os.makedirs(out_dir, exist_ok=True)
        for name in os.listdir(out_dir):
            if name.startswith("_C.") and name.endswith(sysconfig.get_config_var("EXT_SUFFIX")):
                os.remove(os.path.join(out_dir, name))
        with open(failed_marker, "w") as f:
            f.write(f"fastflow._C was not built when fastflow was installed: {message}\n")

    def _cmake_build(self, cmake, out_dir, with_cuda):
        args = [
            f"-DFASTFLOW_OUTPUT_DIR={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DFASTFLOW_CUDA={'ON' if with_cuda else 'OFF'}",
            f"-DFASTFLOW_CUDA_EMULATOR={'ON' if _env_flag('FASTFLOW_CUDA_EMULATOR') else 'OFF'}",
        ]
        try:
            import pybind11
            args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except Exception:
            pass
        if with_cuda:
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={os.environ.get('FASTFLOW_CUDA_ARCHS', '80;90')}")
            nvcc = _find_nvcc()
            if nvcc:
                args.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
        if shutil.which("ninja") or self._pip_ninja():
            args += ["-G", "Ninja"]
            ninja = shutil.which("ninja") or self._pip_ninja()
            args.append(f"-DCMAKE_MAKE_PROGRAM={ninja}")
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 2)
        build_dir = self._build_dir(with_cuda, args)
        try:
            self._call([cmake, "-S", ROOT, "-B", build_dir] + args)
            self._call([cmake, "--build", build_dir, "-j", jobs])
        except (subprocess.CalledProcessError, OSError):
            shutil.rmtree(build_dir, ignore_errors=True)  # (its cache would keep what failed)
            raise

    def _build_dir(self, with_cuda, args):
        """A build folder that persists between installs (ninja rebuilds what changed), one per
        Python and variant; emptied when the compilers, their flags or the arguments differ from
        its last configure, which CMake would otherwise keep."""
        tag = f"setup-py{sys.version_info[0]}{sys.version_info[1]}-{'cuda' if with_cuda else 'cpu'}"
        build_dir = os.path.join(ROOT, "build", tag)
        stamp = json.dumps({"args": args, "cxx": shutil.which(os.environ.get("CXX") or "c++"),
                            "cc": shutil.which(os.environ.get("CC") or "cc"),
                            # (CMake reads these once, at the first configure)
                            **{v: os.environ.get(v) for v in ("CUDACXX", "CXXFLAGS", "CFLAGS", "LDFLAGS", "CUDAFLAGS")}})
        stamp_file = os.path.join(build_dir, "fastflow-configure.json")
        try:
            with open(stamp_file) as f:
                fresh = f.read() != stamp
        except OSError:
            fresh = True
        if fresh:
            shutil.rmtree(build_dir, ignore_errors=True)
            os.makedirs(build_dir)
            with open(stamp_file, "w") as f:
                f.write(stamp)
        return build_dir

    @staticmethod
    def _pip_ninja():
        try:
            import ninja
            path = os.path.join(ninja.BIN_DIR, "ninja")
            return path if os.path.exists(path) else None
        except Exception:
            return None

    @staticmethod
    def _call(cmd):
        print("fastflow:", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sys.stdout.write(proc.stdout[-20000:])
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd, output=proc.stdout[-4000:])


# namespace-aware: a subpackage folder without __init__.py (fastflow/ops today) still ships
packages = find_packages(include=["fastflow", "fastflow.*"])
if "fastflow.triton_kernels" not in packages:
    packages.append("fastflow.triton_kernels")

setup(
    name="fastflow",
    version="0.1.0",
    description="Fused kernels for flow-matching models: path sampling + loss, ODE steps, CTMC jump steps",
    long_description=__doc__,
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=packages,
    package_dir={"fastflow.triton_kernels": "triton_kernels"},
    ext_modules=[CMakeExtension("fastflow._C")],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=["torch>=2.4", "numpy", "tqdm"],
    extras_require={
        "triton": ["triton>=3.0"],
        "ot": ["scipy"],  # fastflow.torchcfm's exact OT (linear_sum_assignment, linprog)
        "test": ["pytest", "flow-matching==1.0.10", "scipy", "torchdiffeq"],
        "bench": ["matplotlib", "nvtx"],
    },
    zip_safe=False,
)
