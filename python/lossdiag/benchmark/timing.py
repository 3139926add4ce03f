"""Timing: warm-up and minimum times, alternating (paired) timings, the memory limit, other load.

Nothing here knows about cases or kernels: ``measure`` times any callable, ``MemoryLimit`` reads and
copies any array, ``OtherLoad`` watches what other processes do to the CPUs meanwhile.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

# ``measure`` stops after this many timed calls per requested repeat, whatever its minimum time.
MAX_CALLS_PER_REPEAT = 25
DISTURBED = 0.2  # CPUs used by other processes above which a case's timings are flagged


def measure(fn: Callable[[], Any], repeats: int, warmup: int,
            setup: Callable[[], Any] | None = None, *, min_warmup_s: float = 0.0,
            min_time_s: float = 0.0) -> tuple[list[float], Any]:
    """Time ``fn``; return the timed durations (ms) and the result of the first call.

    Untimed warm-up calls run until there have been ``warmup`` of them and they took
    ``min_warmup_s`` seconds; timed calls then run until there are ``repeats`` of them and they
    add up to ``min_time_s`` seconds (at most ``MAX_CALLS_PER_REPEAT * repeats`` calls).
    ``setup`` (untimed) runs before every call, e.g. to restore an in-place buffer.

    >>> times, first = measure(lambda: 42, repeats=3, warmup=1)
    >>> len(times), first
    (3, 42)
    """
    first: Any = None
    times: list[float] = []
    cap = MAX_CALLS_PER_REPEAT * repeats
    warm = timed = 0.0
    i = 0
    while True:
        warming = i < warmup or warm < min_warmup_s
        if not warming and len(times) >= repeats and (timed >= min_time_s
                                                      or len(times) >= cap):
            break
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t0
        if i == 0:
            first = r
        del r
        if warming:
            warm += dt
        else:
            times.append(dt * 1e3)
            timed += dt
        i += 1
    return times, first


def measure_paired(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int, *,
                   min_warmup_s: float = 0.0) -> dict[str, list[float]]:
    """Time several functions in alternation: one call of each per round (ms per call).

    The order is reversed every other round, so no function always runs right after another.
    On a shared machine the speed drifts over seconds; a ratio between two functions measured
    in separate blocks mixes that drift in, one taken round by round does not. Warm-up rounds
    run until there have been ``warmup`` of them and they took ``min_warmup_s`` seconds.

    >>> t = measure_paired({"a": lambda: 1, "b": lambda: 2}, rounds=4, warmup=1)
    >>> sorted(t), [len(v) for v in t.values()]
    (['a', 'b'], [4, 4])
    """
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    warm = 0.0
    i = n_warm = 0
    while i < rounds:
        warming = n_warm < warmup or warm < min_warmup_s
        for n in (names if (n_warm + i) % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            r = fns[n]()
            dt = time.perf_counter() - t0
            del r
            if warming:
                warm += dt
            else:
                times[n].append(dt * 1e3)
        if warming:
            n_warm += 1
        else:
            i += 1
    return times


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``times[num][i] / times[den][i]``."""
    return float(np.median(np.asarray(times[num]) / np.asarray(times[den])))


class MemoryLimit:
    """Read and copy kernels that approximate the machine's memory bandwidth limit.

    Uses ``lossdiag._core.mem_read`` / ``mem_copy`` when the core provides them, plus a NumPy
    version (``sum`` / ``copyto`` on one chunk per thread; both release the GIL).  Every available
    variant is timed and the fastest is taken as the limit.
    """

    def __init__(self, core: Any, threads: int) -> None:
        self.threads = max(1, threads)
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.core = core

    def read_variants(self) -> list[tuple[str, Callable[[np.ndarray], Any]]]:
        """(label, function) pairs that read a whole array."""
        out: list[tuple[str, Callable[[np.ndarray], Any]]] = []
        if self.core is not None and hasattr(self.core, "mem_read"):
            out.append(("_core.mem_read", self.core.mem_read))
        out.append((f"numpy sum x{self.threads}thr", self._np_read))
        return out

    def copy_variants(self) -> list[tuple[str, Callable[[np.ndarray, np.ndarray], Any]]]:
        """(label, function(src, dst)) pairs that copy a whole array."""
        out: list[tuple[str, Callable[[np.ndarray, np.ndarray], Any]]] = []
        core_copy = self._core_copy()
        if core_copy is not None:
            out.append(("_core.mem_copy", core_copy))
        out.append((f"numpy copyto x{self.threads}thr", self._np_copy))
        return out

    def _core_copy(self) -> Callable[[np.ndarray, np.ndarray], Any] | None:
        """``_core.mem_copy`` as f(src, dst), whichever argument order the core uses (probed)."""
        fn = getattr(self.core, "mem_copy", None) if self.core is not None else None
        if fn is None:
            return None
        a = np.arange(1, 1025, dtype=np.float32)
        b = np.zeros_like(a)
        fn(b, a)
        if np.array_equal(b, a):  # mem_copy(dst, src)
            return lambda src, dst: fn(dst, src)
        if not a.any():  # mem_copy(src, dst)
            return fn
        return None

    def _np_read(self, a: np.ndarray) -> float:
        chunks = np.array_split(a.reshape(-1), self.threads)
        if self.pool is None:
            return float(chunks[0].sum())
        return float(sum(self.pool.map(np.sum, chunks)))

    def _np_copy(self, src: np.ndarray, dst: np.ndarray) -> None:
        s = np.array_split(src.reshape(-1), self.threads)
        d = np.array_split(dst.reshape(-1), self.threads)
        if self.pool is None:
            np.copyto(d[0], s[0])
        else:
            list(self.pool.map(np.copyto, d, s))

    def close(self) -> None:
        """Stop the worker threads."""
        if self.pool is not None:
            self.pool.shutdown()


class OtherLoad:
    """Average number of CPUs used by *other* processes between construction and ``value()``.

    System-wide busy time from /proc/stat minus this process's own CPU time (all threads).
    None where /proc/stat is unavailable.
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.sys0 = self._system_busy()
        self.self0 = self._self_cpu()

    @staticmethod
    def _system_busy() -> float | None:
        try:
            with open("/proc/stat") as fh:
                v = [int(a) for a in fh.readline().split()[1:]]
            hz = os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            return None
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / hz

    @staticmethod
    def _self_cpu() -> float:
        t = os.times()
        return t.user + t.system

    def value(self) -> float | None:
        """Other processes' average CPU count since construction (>= 0)."""
        sys1 = self._system_busy()
        wall = time.perf_counter() - self.t0
        if self.sys0 is None or sys1 is None or wall <= 0:
            return None
        return max(0.0, (sys1 - self.sys0 - (self._self_cpu() - self.self0)) / wall)


def busy_cpus(interval: float = 0.25) -> float | None:
    """CPUs kept busy by other processes over a short window, or None."""
    mon = OtherLoad()
    time.sleep(interval)
    return mon.value()


def wait_quiet(max_wait: float, log: Callable[[str], None]) -> None:
    """Wait (up to ``max_wait`` s) until other processes leave the CPUs alone for ~2 s."""
    t_end = time.perf_counter() + max_wait
    busy = busy_cpus(1.0)
    while busy is not None and busy > DISTURBED / 2 and time.perf_counter() < t_end:
        log(f"  waiting for a quiet machine (other processes use ~{busy:.1f} CPUs)")
        time.sleep(5.0)
        busy = busy_cpus(2.0)
