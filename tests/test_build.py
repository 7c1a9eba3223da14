"""The standalone CMake build of csrc/ (what CI runs): configure + build with
-DFASTFLOW_CUDA=ON where nvcc is present (one architecture here, to keep it about a minute),
and the CPU-only build otherwise. The module goes to a temporary folder, never over the
checkout's fastflow/_C. Set FASTFLOW_SKIP_BUILD_TEST=1 to skip those two (not setup.py's
fallback check, which configures nothing that works)."""
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

repeats_ci_build = pytest.mark.skipif(os.environ.get("FASTFLOW_SKIP_BUILD_TEST") == "1",
                                      reason="FASTFLOW_SKIP_BUILD_TEST=1 (CI built it just before)")


def _tools():
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found")
    try:
        import pybind11
    except ImportError:
        pytest.skip("pybind11 not installed")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    return cmake, gen, pybind11.get_cmake_dir()


def _build(tmp_path, cuda: bool):
    cmake, gen, pybind11_dir = _tools()
    build, out = tmp_path / "build", tmp_path / "out"
    cfg = [cmake, "-S", ROOT, "-B", str(build), *gen, f"-DFASTFLOW_CUDA={'ON' if cuda else 'OFF'}",
           f"-DFASTFLOW_OUTPUT_DIR={out}", f"-Dpybind11_DIR={pybind11_dir}", f"-DPython_EXECUTABLE={sys.executable}"]
    if cuda:
        cfg.append("-DCMAKE_CUDA_ARCHITECTURES=90")
    for cmd in (cfg, [cmake, "--build", str(build), "-j", str(os.cpu_count() or 2)]):
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stdout[-6000:]
    built = [f for f in os.listdir(out) if f.startswith("_C") and f.endswith((".so", ".pyd"))]
    assert len(built) == 1, os.listdir(out)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import _C; "
            "print(_C.has_cuda(), _C.cpu_isa())")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout
    has_cuda, _ = proc.stdout.split()
    assert has_cuda == str(cuda)


@repeats_ci_build
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
def test_cmake_build_with_cuda(tmp_path):
    _build(tmp_path, cuda=True)


@repeats_ci_build
@pytest.mark.skipif(shutil.which("nvcc") is not None, reason="the CUDA build covers the CPU part")
def test_cmake_build_cpu_only(tmp_path):
    _build(tmp_path, cuda=False)


def test_a_failed_build_falls_back_and_says_so(tmp_path):
    """setup.py with a broken C++ compiler: a pure-Python install, a warning, BUILD_FAILED.txt
    (so `import fastflow` warns: pip hides the build's output), no module an earlier build left,
    and no build folder whose CMake cache would keep the broken compiler for the next install."""
    _tools()
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.so", "benchmarks", "tests", "examples", "__pycache__", "gpu_out"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    (src / "fastflow" / f"_C{suffix}").write_bytes(b"an earlier build's module")
    env = dict(os.environ, CXX="/bin/false", CC="/bin/false", FASTFLOW_CUDA="0")
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=src, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fastflow._C failed to build" in done.stderr
    assert (src / "fastflow" / "BUILD_FAILED.txt").exists()
    assert not list((src / "fastflow").glob("_C.*"))
    assert not list(src.glob("build/setup-*"))
    # the copy's fastflow (first on the path), without the editable install's finder, which would
    # hand it this checkout's fastflow._C
    code = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in repr(f)]; import fastflow"
    imported = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0 and "failed to build" in imported.stderr, imported.stderr[-2000:]
