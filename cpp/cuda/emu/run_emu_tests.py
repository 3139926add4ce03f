#!/usr/bin/env python
"""Run lossdiag's GPU code path on a machine WITHOUT a GPU (development check, not a CI step).

Builds the real kernel source (cpp/cuda/kernels.cu + module.cpp) with the host compiler against
cuda_emu.h (one thread per CUDA thread, real barriers and warp collectives) into `_cuda_emu`,
puts a NumPy stand-in for CuPy (fakecupy/) on the path, installs the emulated module as
lossdiag._cuda, and runs the shared test suite's "gpu" parametrisations plus tests/test_gpu.py.
What this checks: kernel logic (indexing, layouts, reductions, warp-collective masks, statistics)
and lossdiag/core/cuda.py. What it cannot check: the GPU memory model, performance, real CuPy/torch
interop (0-d arrays, streams, DLPack), compilation for the real targets (nvcc does that).

    python cpp/cuda/emu/run_emu_tests.py [--asan] [pytest args, default: tests -k gpu]
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
OUT = os.path.join(ROOT, "build", "emu")


def build(asan: bool) -> str:
    import pybind11

    os.makedirs(OUT, exist_ok=True)
    so = os.path.join(OUT, "_cuda_emu" + sysconfig.get_config_var("EXT_SUFFIX"))
    srcs = [os.path.join(ROOT, "cpp", "cuda", f) for f in ("module.cpp", "kernels.cu")]
    deps = srcs + [os.path.join(ROOT, "cpp", "cuda", f) for f in ("cuda_api.h", "emu/cuda_emu.h")]
    stamp = so + (".asan" if asan else ".plain")
    if os.path.exists(so) and os.path.exists(stamp) and all(
            os.path.getmtime(d) < os.path.getmtime(so) for d in deps):
        return so
    cmd = [os.environ.get("CXX", "g++"), "-std=c++20", "-O1", "-g", "-shared", "-fPIC", "-pthread",
           "-DLDCUDA_EMU", "-DLDCUDA_MODULE=_cuda_emu", "-Wno-unknown-pragmas",
           "-I", os.path.join(ROOT, "cpp", "cuda"), "-I", pybind11.get_include(),
           "-I", sysconfig.get_paths()["include"], "-o", so, srcs[0], "-x", "c++", srcs[1]]
    if asan:
        cmd[1:1] = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    for s in (".asan", ".plain"):
        if os.path.exists(so + s):
            os.remove(so + s)
    open(stamp, "w").close()
    return so


PLUGIN = """
import sys
import _cuda_emu
sys.modules["lossdiag._cuda"] = _cuda_emu
import lossdiag
lossdiag._cuda = _cuda_emu
"""


def main(argv: list[str]) -> int:
    asan = "--asan" in argv
    argv = [a for a in argv if a != "--asan"]
    build(asan)
    with open(os.path.join(OUT, "emu_plugin.py"), "w") as f:
        f.write(PLUGIN)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(HERE, "fakecupy"), OUT,
                                         env.get("PYTHONPATH", "")])
    env["LOSSDIAG_EMU"] = "1"
    if asan:
        lib = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
        env["LD_PRELOAD"] = lib
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    args = argv or ["tests", "-k", "gpu"]
    cmd = [sys.executable, "-m", "pytest", "-p", "emu_plugin", "-q", *args]
    print(" ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
