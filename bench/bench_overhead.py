"""Per-call overhead of the array API: small and cache-resident inputs, against torch CPU.

    python bench/bench_overhead.py                     # (2, 3), (256, 10), (1024, 1000), 2 threads
    python bench/bench_overhead.py --shapes 2x3 --rounds 41 --json out.json
    python bench/bench_overhead.py --threads 1 --clock thread   # CPU time, on a busy machine

A training loop calls the loss and the metrics thousands of times on small batches, where the
time goes to argument checks, dispatch and result objects rather than to the pass over the
logits. For each shape (float32 logits, int64 labels; float {0, 1} targets of the logits' shape
for the binary functions) this times, in alternation:

* each public function (``lossdiag.cross_entropy``, ``accuracy``, ``cross_entropy_grad``,
  ``evaluate``, ``binary_cross_entropy``, ``binary_accuracy``, ``Metrics.update``);
* **the kernel alone**: ``lossdiag._core`` called directly with arguments prepared once (the
  layout, dtype codes, result arrays), so that ``lossdiag - kernel`` is the Python overhead;
* torch CPU: ``F.cross_entropy``, ``(x.argmax(1) == y).float().mean()``, autograd
  forward + ``torch.autograd.grad``, ``F.binary_cross_entropy_with_logits`` and the threshold
  accuracy, on tensors sharing the NumPy arrays' memory (torch results stay tensors: no
  ``.item()``);
* ``np.add(x, x)`` as the floor of a call into compiled code.

``torch.set_num_threads`` and ``lossdiag.set_num_threads`` get the same count (``--threads``,
default 2). A sample is a loop of calls lasting at least ``--sample-ms``; each round takes one
sample of every implementation of a function, in an order reversed every other round; the table
gives the median time per call over ``--rounds`` rounds and the median of the round-by-round
ratios (noise on a shared machine drifts over seconds, and a ratio taken within a round cancels
most of it). ``--clock thread --threads 1`` times CPU time of the calling thread instead of
elapsed time: on a busy machine it leaves out the waits for a CPU, which elapsed times of
multi-threaded calls suffer most (an OpenMP barrier waits for a descheduled thread). Before
timing, every lossdiag result is checked against torch (exit status 2 on a mismatch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

try:
    import lossdiag as ld
except ImportError:  # running from a source checkout without an install
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
    import lossdiag as ld

from lossdiag import _core
from lossdiag.benchmark import OtherLoad

SHAPES = ((2, 3), (256, 10), (1024, 1000))
BINS = 20


def _parse_shape(s: str) -> tuple[int, int]:
    n, c = s.lower().split("x")
    return int(n), int(c)


# -- the kernel alone -------------------------------------------------------------------------
# Positional arguments of _core.ce / _core.bce (cpp/bind_core.cpp), prepared once: what is left
# of a call when the Python layer does nothing.
def _ce_args(x: np.ndarray, y: np.ndarray, *, loss: bool = True, grad: bool = False,
             stats: bool = False, topk: bool = False, g: Any = None,
             arrays: tuple[Any, ...] = (None,) * 8,
             classes: tuple[Any, ...] = (None, None)) -> tuple[Any, ...]:
    N, C = x.shape
    return (x, 1, y, 7, False, N, C, 1, N, 1, True, None, -100, 0.0, False, loss, grad, stats,
            topk, 1.0 / N, g, None, [1] if topk else [], BINS if stats else 0, *arrays, False,
            None, None, None, None, None, None, *classes)


def _bce_args(x: np.ndarray, t: np.ndarray) -> tuple[Any, ...]:
    return (x, 1, t, 1, True, x.size, None, 1, False, True, False, False, 0.0, 1.0, None, None,
            0, *(None,) * 9)


def _stats_arrays(C: int) -> tuple[np.ndarray, ...]:
    i8, f8 = np.int64, np.float64
    return (np.zeros((C, C), i8), np.zeros(C, f8), np.zeros(C, i8), np.zeros(BINS, i8),
            np.zeros(BINS, i8), np.zeros(BINS, i8), np.zeros(BINS, f8), np.zeros(BINS, i8))


# -- timing -----------------------------------------------------------------------------------
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def _loop(fn: Callable[[], Any], k: int, clock: Callable[[], float]) -> float:
    t0 = clock()
    for _ in range(k):
        fn()
    return clock() - t0


def measure(fns: dict[str, Callable[[], Any]], rounds: int, sample_s: float,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Microseconds per call of each function, one sample of each per round, alternating."""
    counts = {}
    for name, fn in fns.items():  # calibrate (and warm up) the loop length
        k, dt = 1, _loop(fn, 1, clock)
        while dt < sample_s and k < 1 << 20:
            k = max(k * 2, int(k * 1.2 * sample_s / max(dt, 1e-9)))
            dt = _loop(fn, k, clock)
        counts[name] = k
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].append(_loop(fns[n], counts[n], clock) / counts[n] * 1e6)
    return out


def _ratio(a: list[float], b: list[float]) -> float:
    """Median of the round-by-round ratios a / b."""
    return statistics.median(x / y for x, y in zip(a, b))


# -- correctness ------------------------------------------------------------------------------
def _check(what: str, got: float, want: float, rtol: float = 1e-4) -> None:
    if not abs(got - want) <= rtol * max(1.0, abs(want)):
        print(f"MISMATCH {what}: lossdiag {got!r}, torch {want!r}", file=sys.stderr)
        sys.exit(2)


# -- one shape --------------------------------------------------------------------------------
def bench_shape(shape: tuple[int, int], torch: Any, rounds: int, sample_s: float,
                clock: Callable[[], float] = time.perf_counter) -> list[dict[str, Any]]:
    N, C = shape
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    y = rng.integers(0, C, size=N).astype(np.int64)
    tb = (rng.random(shape) < 0.5).astype(np.float32)  # binary targets
    m = ld.Metrics(C)
    ev_arrays = _stats_arrays(C)
    ce_a = _ce_args(x, y)
    acc_a = _ce_args(x, y, loss=False, topk=True)
    g = np.empty_like(x)
    grad_a = _ce_args(x, y, grad=True, g=g)
    ev_a = _ce_args(x, y, stats=True, topk=True, arrays=ev_arrays,
                    classes=(np.zeros(C, np.int64), np.zeros(C, np.int64)))
    bce_a = _bce_args(x, tb)

    groups: dict[str, dict[str, Callable[[], Any]]] = {
        "cross_entropy": {"lossdiag": lambda: ld.cross_entropy(x, y),
                          "kernel": lambda: _core.ce(*ce_a)},
        "accuracy": {"lossdiag": lambda: ld.accuracy(x, y), "kernel": lambda: _core.ce(*acc_a)},
        "cross_entropy_grad": {"lossdiag": lambda: ld.cross_entropy_grad(x, y),
                               "kernel": lambda: _core.ce(*grad_a)},
        "evaluate": {"lossdiag": lambda: ld.evaluate(x, y), "kernel": lambda: _core.ce(*ev_a),
                     "cross_entropy": lambda: ld.cross_entropy(x, y)},
        "Metrics.update": {"lossdiag": lambda: m.update(x, y),
                           "evaluate": lambda: ld.evaluate(x, y)},
        "binary_cross_entropy": {"lossdiag": lambda: ld.binary_cross_entropy(x, tb),
                                 "kernel": lambda: _core.bce(*bce_a)},
        "binary_accuracy": {"lossdiag": lambda: ld.binary_accuracy(x, tb),
                            "kernel": lambda: _core.bce(*bce_a)},
        "np.add (floor)": {"numpy": lambda: np.add(x, x)},
    }
    if torch is not None:
        F = torch.nn.functional
        tx, ty, ttb = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(tb)
        leaf = tx.clone().requires_grad_(True)

        def torch_grad() -> Any:
            loss = F.cross_entropy(leaf, ty)
            return loss, torch.autograd.grad(loss, leaf)[0]

        groups["cross_entropy"]["torch"] = lambda: F.cross_entropy(tx, ty)
        groups["accuracy"]["torch"] = lambda: (tx.argmax(1) == ty).float().mean()
        groups["cross_entropy_grad"]["torch"] = torch_grad
        groups["binary_cross_entropy"]["torch"] = (
            lambda: F.binary_cross_entropy_with_logits(tx, ttb))
        groups["binary_accuracy"]["torch"] = lambda: ((tx > 0) == (ttb >= 0.5)).float().mean()
        _check(f"{shape} cross_entropy", ld.cross_entropy(x, y), float(F.cross_entropy(tx, ty)))
        _check(f"{shape} accuracy", ld.accuracy(x, y),
               float((tx.argmax(1) == ty).float().mean()), 1e-6)
        loss, gr = ld.cross_entropy_grad(x, y)
        tl, tg = torch_grad()
        _check(f"{shape} cross_entropy_grad loss", loss, float(tl.detach()))
        _check(f"{shape} cross_entropy_grad grad", float(np.abs(gr - tg.numpy()).max()), 0.0,
               1e-6)
        _check(f"{shape} evaluate loss", ld.evaluate(x, y).loss, float(F.cross_entropy(tx, ty)))
        _check(f"{shape} binary_cross_entropy", ld.binary_cross_entropy(x, tb),
               float(F.binary_cross_entropy_with_logits(tx, ttb)))
        _check(f"{shape} binary_accuracy", ld.binary_accuracy(x, tb),
               float(((tx > 0) == (ttb >= 0.5)).float().mean()), 1e-6)

    rows = []
    for func, fns in groups.items():
        load = OtherLoad()
        t = measure(fns, rounds, sample_s, clock)
        row: dict[str, Any] = {"shape": list(shape), "function": func,
                               "median_us": {k: statistics.median(v) for k, v in t.items()},
                               "other_load": load.value()}
        if "lossdiag" in t:
            row["ratios"] = {k: _ratio(t[k], t["lossdiag"]) for k in t if k != "lossdiag"}
        if "kernel" in t:
            row["overhead_us"] = statistics.median(
                a - b for a, b in zip(t["lossdiag"], t["kernel"]))
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _fmt(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us:.1f}" if us < 1000 else f"{us / 1000:.2f} ms"


def _line(row: dict[str, Any]) -> str:
    med, rat = row["median_us"], row.get("ratios", {})
    shape = "x".join(map(str, row["shape"]))
    parts = [f"{shape:>9} {row['function']:<21}"]
    for k, v in med.items():
        parts.append(f"{k} {_fmt(v)}")
    if "overhead_us" in row:
        parts.append(f"overhead {_fmt(row['overhead_us'])}")
    for k, v in rat.items():
        parts.append(f"{k}/lossdiag {v:.2f}")
    if row["other_load"] is not None:
        parts.append(f"(other load {row['other_load']:.1f} CPU)")
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default=",".join(f"{n}x{c}" for n, c in SHAPES),
                   help="comma-separated NxC shapes (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--sample-ms", type=float, default=20.0)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: elapsed time; thread: CPU time of the calling thread, which "
                        "excludes time spent waiting for a busy machine's CPUs (needs "
                        "--threads 1, since it does not see other threads' work)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", help="write the results to this file")
    a = p.parse_args(argv)
    if a.clock == "thread" and a.threads != 1:
        p.error("--clock thread measures the calling thread only: use it with --threads 1")
    torch = None
    if not a.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: no torch column", file=sys.stderr)
    threads_before = ld.get_num_threads()
    ld.set_num_threads(a.threads)
    if torch is not None:
        torch.set_num_threads(a.threads)
    print(f"# lossdiag {ld.__version__} ({_core.simd()}), NumPy {np.__version__}, torch "
          f"{getattr(torch, '__version__', '-')}; {a.threads} threads for lossdiag and torch; "
          f"{os.cpu_count()} CPUs; {a.clock} clock; median us per call over {a.rounds} rounds; "
          "X/lossdiag > 1: lossdiag is faster than X")
    try:
        rows = [r for s in a.shapes.split(",")
                for r in bench_shape(_parse_shape(s), torch, a.rounds, a.sample_ms / 1000,
                                     CLOCKS[a.clock])]
    finally:
        ld.set_num_threads(threads_before)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"threads": a.threads, "rounds": a.rounds, "clock": a.clock,
                       "results": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
