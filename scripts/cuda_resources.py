"""ptxas's resource report for every CUDA kernel instantiation in csrc/cuda, and a check on it.

No GPU is needed: CMake configures a CUDA build in ``build/ptxas`` with the project's own flags
plus ``-Xptxas=-v`` for one architecture (sm_90 by default) and compiles only the ``.cu`` objects;
ptxas prints each kernel's registers, spill bytes and stack. The kernels stream memory, so what
matters is that each holds enough threads resident to hide its loads and that nothing spills
in its loop:

- registers: at most ``--max-registers`` (128 by default: 512 resident threads, a quarter of an
  SM's 2048, the least that keeps a 128-bit-load stream near bandwidth);
- spills: at most ``--max-spill`` bytes stored per thread (32 by default; a few words that ptxas
  parks outside the loop, served by L1).

It prints one line per kernel template (the range over its instantiations) and exits 1 naming
every instantiation over a limit. On its own:

    python scripts/cuda_resources.py [--arch 90] [--max-registers 128] [--max-spill 32]

``--log FILE`` reads the report from the output of a build already made with ``-Xptxas=-v``
instead (every architecture in it is checked): CI configures its CMake build with
``CUDAFLAGS=-Xptxas=-v`` and passes that build's log (``.ci/run``), which saves compiling
csrc/cuda a second time. The log must hold the compilation of every ``.cu`` (a fresh build
folder): ninja rebuilds only what changed, and a partial report would pass unseen kernels.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\w+)'")
FRAME = re.compile(r"Function properties for (\S+)\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                   r"(\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers")
THREADS_PER_SM, REGISTERS_PER_SM = 2048, 65536


def cuda_objects(build: Path) -> list[str]:
    """The ninja targets of the .cu objects (every name in CMake's FASTFLOW_CUDA_OPS)."""
    listed = subprocess.run(["ninja", "-C", str(build), "-t", "targets", "all"], check=True,
                            capture_output=True, text=True).stdout
    return sorted({line.split(":")[0] for line in listed.splitlines() if line.split(":")[0].endswith(".cu.o")})


def compile_verbose(arch: str) -> str:
    """ptxas's report for every .cu of csrc/cuda, built by CMake with the project's flags."""
    build = ROOT / "build" / "ptxas"
    shutil.rmtree(build, ignore_errors=True)  # a rebuild of nothing would report nothing
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", "-DFASTFLOW_CUDA=ON",
                    f"-DCMAKE_CUDA_ARCHITECTURES={arch}", "-DCMAKE_CUDA_FLAGS=-Xptxas=-v",
                    f"-DFASTFLOW_OUTPUT_DIR={build / 'out'}", f"-DPython_EXECUTABLE={sys.executable}"],
                   check=True, stdout=subprocess.DEVNULL)
    done = subprocess.run(["ninja", "-C", str(build), "-j", str(os.cpu_count() or 1), *cuda_objects(build)],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"cuda_resources: the CUDA build failed\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def check_complete(log: str, source: str) -> None:
    """Exit unless ``log`` shows ninja compiling every ``csrc/cuda/*.cu`` (see ``--log``)."""
    built = set(re.findall(r"Building CUDA object \S*csrc/cuda/(\w+)\.cu\.o", log))
    missing = sorted(p.stem for p in (ROOT / "csrc" / "cuda").glob("*.cu") if p.stem not in built)
    if missing:
        sys.exit(f"cuda_resources: {source} does not show {', '.join(m + '.cu' for m in missing)} being compiled "
                 "(ninja compiles only what changed: use a fresh build folder, configured with "
                 "CUDAFLAGS=-Xptxas=-v)")


def demangle(names: list[str]) -> dict[str, str]:
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
        return dict(zip(names, out.stdout.splitlines()))
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}


def kernels(log: str) -> list[dict]:
    """One record per kernel instantiation: name, arch, registers, spill-store bytes, stack bytes."""
    frames = {m.group(1): tuple(map(int, m.group(2, 3, 4))) for m in FRAME.finditer(log)}
    found, current = [], None
    for line in log.splitlines():
        if m := ENTRY.search(line):
            current = m.group(1), m.group(2)
        elif (m := USED.search(line)) and current:
            if current[0] not in frames:  # a changed report format must not read as "no spills"
                sys.exit(f"cuda_resources: no stack / spill line from ptxas for {current[0]}")
            stack, stores, _loads = frames[current[0]]
            found.append(dict(mangled=current[0], arch=current[1], registers=int(m.group(1)), stack=stack,
                              spill_stores=stores))
            current = None
    names = demangle([k["mangled"] for k in found])
    for k in found:
        k["name"] = names[k["mangled"]]
    return found


def template(name: str) -> str:
    """``fastflow::cuda::(anonymous namespace)::loss_kernel<float, ...>(...)`` -> ``loss_kernel``."""
    name = name.replace("(anonymous namespace)", "")
    return name.split("<" if "<" in name else "(")[0].rsplit("::", 1)[-1]


def resident_threads(registers: int) -> int:
    """Threads an SM's register file holds at this count per thread (allocated in units of 8;
    whole blocks make it a little less)."""
    return min(THREADS_PER_SM, REGISTERS_PER_SM // (-(-registers // 8) * 8))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="90", help="CUDA architecture, as CMAKE_CUDA_ARCHITECTURES (default 90)")
    p.add_argument("--max-registers", type=int, default=128)
    p.add_argument("--max-spill", type=int, default=32, help="spill-store bytes a thread may have")
    p.add_argument("--log", type=Path, help="the output of a fresh CMake build made with -Xptxas=-v, "
                   "read instead of compiling (--arch is then ignored: every architecture in it is checked)")
    args = p.parse_args(argv)
    log = args.log.read_text(errors="replace") if args.log else compile_verbose(args.arch)
    check_complete(log, str(args.log) if args.log else "the build")
    found = kernels(log)
    if not found:
        print("cuda_resources: ptxas reported no kernel (was -Xptxas=-v passed to nvcc?)", file=sys.stderr)
        return 1
    by_template = defaultdict(list)
    for k in found:
        by_template[template(k["name"])].append(k)
    print(f"{'kernel':24} {'inst':>4} {'registers':>11} {'threads/SM (regs)':>17} {'spilling (max B)':>16} {'stack B':>8}")
    for name, ks in sorted(by_template.items()):
        lo, hi = min(k["registers"] for k in ks), max(k["registers"] for k in ks)
        spilling = sum(1 for k in ks if k["spill_stores"])
        spill = f"{spilling} ({max(k['spill_stores'] for k in ks)})"
        print(f"{name:24} {len(ks):>4} {f'{lo}-{hi}':>11} {resident_threads(hi):>17} {spill:>16} "
              f"{max(k['stack'] for k in ks):>8}")
    over = [k for k in found if k["registers"] > args.max_registers or k["spill_stores"] > args.max_spill]
    for k in over:
        print(f"over a limit: {k['name']} ({k['arch']}): {k['registers']} registers, "
              f"{k['spill_stores']} bytes of spill stores", file=sys.stderr)
    archs = ", ".join(sorted({k["arch"] for k in found}))
    print(f"{len(found)} kernel instantiations for {archs}; {len(over)} over "
          f"{args.max_registers} registers or {args.max_spill} spill bytes")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
