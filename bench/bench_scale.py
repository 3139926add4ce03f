#!/usr/bin/env python
"""Pixels per second of `Metrics` on one process vs Dask threads vs a 2-worker LocalCluster.

The dataset: 10^9 pixels (4000 images of 500 x 500), 21 classes, float32 logits in (N, C, H, W)
(84 GB) and uint8 labels, **lazily generated**: every chunk of 4 images is produced by its task,
as a view into a per-process pool of 8 random images (176 MB), so the benchmark measures the
evaluation and the scheduling, not a random number generator (which would cost more than the
evaluation itself). Labels are the argmax of the logits for 70 % of the pixels, random otherwise.

Modes, each in a fresh process (so its peak memory is its own):

* ``single-1t`` / ``single-2t``: one process, ``Metrics.update`` chunk after chunk, with 1 or 2
  OpenMP threads in the kernels;
* ``threads``: ``lossdiag.dask.evaluate`` on the threaded scheduler, 2 Dask threads x 1 kernel
  thread;
* ``cluster``: ``lossdiag.dask.evaluate`` on a ``distributed.LocalCluster`` of 2 worker processes
  x 1 thread x 1 kernel thread (peak RSS measured in each worker).

Every mode evaluates the same chunks and must end with bitwise the same state (the digest
column): the Dask results are the sequential merge of the chunks in order, whatever ran where.
Times are medians of ``--repeat`` runs, after a warm-up that builds the pools.

Usage: ``python bench/bench_scale.py [--pixels 1e9] [--repeat 3] [--modes ...] [--json F]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

C, H, W = 21, 500, 500
BATCH = 4          # images per chunk: 4 x 21 x 500 x 500 x 4 B = 84 MB of logits
POOL = 8           # images in the per-process pool
SEED = 1234
MODES = ("single-1t", "single-2t", "threads", "cluster")
_POOLS: dict[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] = {}


# ------------------------------------------------------------------------------------------------
# the lazily generated dataset (module-level functions: workers import them from this module)
# ------------------------------------------------------------------------------------------------
def pool(c: int = C, h: int = H, w: int = W, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    key = (c, h, w, seed)
    if key not in _POOLS:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((POOL, c, h, w), dtype=np.float32)
        t = x.argmax(axis=1).astype(np.uint8)
        noise = rng.random(t.shape) < 0.3
        t[noise] = rng.integers(0, c, size=int(noise.sum()), dtype=np.uint8)
        _POOLS[key] = (x, t)
    return _POOLS[key]


def _offset(k: int, n: int) -> int:
    return (3 * k) % (POOL - n + 1)


def logits_block(block_info: Any = None) -> np.ndarray:
    k, n = block_info[None]["chunk-location"][0], block_info[None]["chunk-shape"][0]
    o = _offset(k, n)
    return pool()[0][o:o + n]  # a contiguous view: no copy


def target_block(block_info: Any = None) -> np.ndarray:
    k, n = block_info[None]["chunk-location"][0], block_info[None]["chunk-shape"][0]
    o = _offset(k, n)
    return pool()[1][o:o + n]


def dask_arrays(images: int) -> tuple[Any, Any]:
    import dask.array as da

    nb = [BATCH] * (images // BATCH) + ([images % BATCH] if images % BATCH else [])
    x = da.map_blocks(logits_block, chunks=(tuple(nb), (C,), (H,), (W,)), dtype=np.float32,
                      meta=np.empty((0, 0, 0, 0), np.float32))
    t = da.map_blocks(target_block, chunks=(tuple(nb), (H,), (W,)), dtype=np.uint8,
                      meta=np.empty((0, 0, 0), np.uint8))
    return x, t


def digest(m: Any) -> str:
    h = hashlib.sha256()
    for k, v in sorted(m.state_dict().items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()[:16]


def _warm() -> int:
    import lossdiag

    lossdiag.set_num_threads(1)
    pool()
    return os.getpid()


def _noop(*args: Any) -> int:
    return 0


def _noop_ms_per_task(client: Any, n: int = 3000) -> float:
    """Round-trip cost of a task that does nothing (a graph shaped like evaluate's: n leaves and
    a tree of fan-in 8), i.e. the scheduling overhead per task on this cluster."""
    import dask

    best = math.inf
    for rep in range(3):
        level = [dask.delayed(_noop, pure=True)(rep, i) for i in range(n)]
        total = n
        while len(level) > 1:
            level = [dask.delayed(_noop, pure=True)(*level[i:i + 8])
                     for i in range(0, len(level), 8)]
            total += len(level)
        t0 = time.perf_counter()
        level[0].compute(scheduler=client)
        best = min(best, (time.perf_counter() - t0) / total * 1e3)
    return best


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


# ------------------------------------------------------------------------------------------------
# one mode, in this process
# ------------------------------------------------------------------------------------------------
def run_mode(mode: str, images: int, repeat: int) -> dict[str, Any]:
    import lossdiag

    times, dig, workers_mb, extra = [], "", [], {}
    if mode.startswith("single"):
        lossdiag.set_num_threads(int(mode[-2]))
        x, t = pool()  # warm-up: the pool is built once per process, outside the timings
        for _ in range(repeat):
            t0 = time.perf_counter()
            m = lossdiag.Metrics(C)
            for k in range(0, images, BATCH):
                n = min(BATCH, images - k)
                o = _offset(k // BATCH, n)
                m.update(x[o:o + n], t[o:o + n])
            times.append(time.perf_counter() - t0)
        dig = digest(m)
        workers_mb = [_peak_rss_mb()]
    elif mode == "threads":
        import dask
        import lossdiag.dask as ldd

        lossdiag.set_num_threads(1)
        pool()
        xd, td = dask_arrays(images)
        with dask.config.set(scheduler="threads", num_workers=2):
            for _ in range(repeat):
                t0 = time.perf_counter()
                m = ldd.evaluate(xd, td)
                times.append(time.perf_counter() - t0)
        dig = digest(m)
        workers_mb = [_peak_rss_mb()]
    elif mode == "cluster":
        import logging

        import distributed
        import lossdiag.dask as ldd

        xd, td = dask_arrays(images)
        t0 = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        with cluster, distributed.Client(cluster) as client:
            client.run(_warm)
            extra["cluster_start_s"] = round(time.perf_counter() - t0, 2)
            for _ in range(repeat):
                t0 = time.perf_counter()
                m = ldd.evaluate(xd, td, scheduler=client)
                times.append(time.perf_counter() - t0)
            workers_mb = sorted(client.run(_peak_rss_mb).values())
            extra["sched_ms_per_task"] = round(_noop_ms_per_task(client), 3)
        dig = digest(m)
        extra["client_peak_mb"] = round(_peak_rss_mb(), 1)
    else:
        raise ValueError(f"mode: unknown {mode!r}; expected one of {MODES}")
    med = statistics.median(times)
    return {"mode": mode, "pixels": images * H * W, "chunks": -(-images // BATCH),
            "times_s": [round(s, 3) for s in times], "median_s": round(med, 3),
            "mpx_per_s": round(images * H * W / med / 1e6, 1),
            "peak_rss_mb_per_worker": [round(v, 1) for v in workers_mb],
            "digest": dig, "loss": float(m.compute()["loss"]), **extra}


# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pixels", type=float, default=1e9, help="dataset size (default 1e9)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    images = max(1, round(a.pixels / (H * W)))
    if a.child:
        print("RESULT " + json.dumps(run_mode(a.child, images, a.repeat)), flush=True)
        return 0

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)  # worker processes import the generators from this module
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    print(f"{images * H * W:.3g} pixels ({images} images of {H}x{W}), {C} classes, float32 "
          f"logits {images * H * W * C * 4 / 1e9:.0f} GB (generated lazily), "
          f"{-(-images // BATCH)} chunks of {BATCH} images; {os.cpu_count()} CPUs; "
          f"median of {a.repeat}", flush=True)
    rows = []
    for mode in a.modes:
        cmd = [sys.executable, "-c", "import sys, bench_scale; sys.exit(bench_scale.main())",
               "--pixels", str(a.pixels), "--repeat", str(a.repeat), "--child", mode]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [s for s in p.stdout.splitlines() if s.startswith("RESULT ")]
        if p.returncode or not line:
            sys.stderr.write(p.stdout + p.stderr)
            raise SystemExit(f"mode {mode} failed")
        rows.append(json.loads(line[-1][7:]))
        r = rows[-1]
        print(f"  {mode:10s} {r['median_s']:8.2f} s  {r['mpx_per_s']:8.1f} Mpx/s  peak RSS "
              f"{'/'.join(f'{v:.0f}' for v in r['peak_rss_mb_per_worker'])} MB  "
              f"digest {r['digest']}  runs {r['times_s']}", flush=True)
    base = next((r for r in rows if r["mode"] == "single-1t"), rows[0])
    print(f"\nscaling vs {base['mode']}:")
    for r in rows:
        print(f"  {r['mode']:10s} x{r['mpx_per_s'] / base['mpx_per_s']:.2f}"
              + (f"  (cluster started in {r['cluster_start_s']} s; {r['sched_ms_per_task']} ms "
                 "per no-op task)" if "sched_ms_per_task" in r else ""))
    same = len({r["digest"] for r in rows}) == 1
    print("same bits in every mode:", same)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "same_bits": same, "cpus": os.cpu_count()}, f, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
