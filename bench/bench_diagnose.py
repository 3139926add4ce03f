#!/usr/bin/env python
"""Time ``lossdiag.diagnose`` on a 100,000-step history with 8 metrics (target: < 1 s).

Two ways the history can arrive:

* ``arrays`` - read from a log file (readers build the columns as arrays);
* ``logged`` - built by 100,000 ``History.log_step`` calls in a training loop (the first
  ``diagnose`` then also converts the logged lists to arrays, which is included in the time).

Prints the median of several runs.  Usage: ``python bench/bench_diagnose.py [--steps N]
[--repeat R]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from lossdiag.diagnosis import diagnose
from lossdiag.history import History

METRICS = ("loss", "accuracy", "iou", "f1")  # x train/val = 8 metrics


def curves(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    decay = np.exp(-t / (n / 6))
    out = {}
    for split, off in (("train", 0.0), ("val", 0.1)):
        out[f"{split}/loss"] = (2.0 * decay + 0.3 + off) * np.exp(0.2 * rng.standard_normal(n))
        for m in METRICS[1:]:
            out[f"{split}/{m}"] = np.clip(0.9 - off - 0.6 * decay
                                          + 0.03 * rng.standard_normal(n), 0, 1)
    return out


def from_arrays(n: int) -> History:
    c = curves(n)
    return History.from_arrays(
        steps=np.arange(n), step_train={k[6:]: v for k, v in c.items() if k.startswith("train/")},
        step_val={k[4:]: v for k, v in c.items() if k.startswith("val/")},
        step_lr=np.full(n, 1e-3), num_classes=10)


def logged(n: int) -> History:
    c = curves(n)
    tr = {k[6:]: v.tolist() for k, v in c.items() if k.startswith("train/")}
    va = {k[4:]: v.tolist() for k, v in c.items() if k.startswith("val/")}
    h = History(num_classes=10)
    for i in range(n):
        h.log_step(i, train={k: v[i] for k, v in tr.items()},
                   val={k: v[i] for k, v in va.items()}, lr=1e-3)
    return h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    n = args.steps
    times = []
    for _ in range(args.repeat):
        h = from_arrays(n)
        t0 = time.perf_counter()
        d = diagnose(h)
        times.append(time.perf_counter() - t0)
    print(f"diagnose, {n:,} steps x 8 metrics (arrays): median {statistics.median(times):.3f} s "
          f"(min {min(times):.3f}, max {max(times):.3f}, {args.repeat} runs); "
          f"findings: {d.codes or 'none'}")
    times = []
    for _ in range(max(3, args.repeat // 2)):
        h = logged(n)
        t0 = time.perf_counter()
        diagnose(h)
        times.append(time.perf_counter() - t0)
    print(f"diagnose, {n:,} steps x 8 metrics (log_step-built, first call): median "
          f"{statistics.median(times):.3f} s ({len(times)} runs)")


if __name__ == "__main__":
    main()
