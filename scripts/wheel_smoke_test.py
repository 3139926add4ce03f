"""Smoke test of an installed lossdiag wheel: import it, check a few numbers against NumPy.

Run by scripts/build_wheel.sh in a fresh virtual environment and by cibuildwheel
(``[tool.cibuildwheel] test-command`` in pyproject.toml) on every wheel it builds. It needs
nothing but the wheel and its dependencies (NumPy), runs in a second, and exits non-zero with
a message on the first wrong result.

    python scripts/wheel_smoke_test.py                 # the installed lossdiag
    python scripts/wheel_smoke_test.py --expect-wheel  # ... and insist it is not a source tree
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np


def _ref_ce(x: np.ndarray, t: np.ndarray, axis: int, ignore_index: int) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient in float64 (max-shifted log-sum-exp)."""
    x = np.moveaxis(x.astype(np.float64), axis, -1)
    c = x.shape[-1]
    x = x.reshape(-1, c)
    t = t.reshape(-1).astype(np.int64)
    valid = t != ignore_index
    tt = np.where(valid, t, 0)
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
    loss = (lse - x[np.arange(len(t)), tt])[valid].mean()
    p = np.exp(x - lse[:, None])
    p[np.arange(len(t)), tt] -= 1.0
    p *= valid[:, None] / valid.sum()
    return float(loss), p


def _check(name: str, got: float, want: float, rtol: float = 1e-5) -> None:
    if not np.isfinite(got) or abs(got - want) > rtol * max(1.0, abs(want)):
        sys.exit(f"wheel smoke test: {name}: got {got!r}, NumPy says {want!r}")
    print(f"  ok  {name} = {got:.6g}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--expect-wheel", action="store_true",
                    help="fail when lossdiag is imported from a source tree (python/lossdiag)")
    args = ap.parse_args(argv)

    import lossdiag

    where = os.path.dirname(lossdiag.__file__)
    print(f"lossdiag {lossdiag.__version__} from {where}")
    if args.expect_wheel and "site-packages" not in where.replace(os.sep, "/"):
        sys.exit(f"wheel smoke test: lossdiag was imported from {where}, not an installed wheel")
    info = lossdiag.info()
    print("  info: " + json.dumps({k: info[k] for k in
                                   ("version", "simd", "best_simd", "threads", "openmp",
                                    "backends", "cuda_built")}))
    if info["version"] != lossdiag.__version__ or info["backends"][0] != "cpu":
        sys.exit(f"wheel smoke test: unexpected info(): {info}")

    rng = np.random.default_rng(0)
    # segmentation, channels first, uint8 labels with "void" pixels
    x = rng.standard_normal((2, 7, 9, 11), dtype=np.float32) * 3
    t = rng.integers(0, 7, (2, 9, 11)).astype(np.uint8)
    t[:, :2] = 255
    want, want_g = _ref_ce(x, t, 1, 255)
    _check("cross_entropy NCHW", lossdiag.cross_entropy(x, t, ignore_index=255), want)
    loss, g = lossdiag.cross_entropy_grad(x, t, ignore_index=255)
    _check("cross_entropy_grad loss", loss, want)
    g = np.moveaxis(np.asarray(g, dtype=np.float64), 1, -1).reshape(-1, 7)
    _check("cross_entropy_grad max |error|", float(np.abs(g - want_g).max()), 0.0, 1e-6)
    valid = t != 255
    acc = float((x.argmax(1) == t)[valid].mean())
    _check("accuracy", lossdiag.accuracy(x, t, ignore_index=255), acc)
    s = lossdiag.evaluate(x, t, ignore_index=255, bins=10)
    _check("evaluate loss", float(s.loss), want)
    _check("evaluate confusion total", float(np.asarray(s.confusion).sum()), float(valid.sum()))
    # channels last and classification
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    _check("cross_entropy channels-last", lossdiag.cross_entropy(xl, t, axis=-1,
                                                                 ignore_index=255), want)
    xc = rng.standard_normal((64, 100))
    tc = rng.integers(0, 100, 64)
    _check("cross_entropy (N, C) float64", lossdiag.cross_entropy(xc, tc),
           _ref_ce(xc, tc, 1, -100)[0])
    # the OpenMP runtime (bundled libgomp in a repaired wheel) and thread control
    before = lossdiag.get_num_threads()
    lossdiag.set_num_threads(1)
    _check("cross_entropy with 1 thread", lossdiag.cross_entropy(x, t, ignore_index=255), want)
    lossdiag.set_num_threads(before)
    # the command-line entry point
    r = subprocess.run([sys.executable, "-m", "lossdiag", "info"], capture_output=True, text=True)
    if r.returncode != 0 or json.loads(r.stdout)["version"] != lossdiag.__version__:
        sys.exit(f"wheel smoke test: `python -m lossdiag info` failed:\n{r.stdout}{r.stderr}")
    print("  ok  python -m lossdiag info")
    print("wheel smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
