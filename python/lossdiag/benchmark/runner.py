"""The benchmark of one case: every (function, implementation) timed and checked against NumPy."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .cases import CASE_NAMES, Case
from .checks import (
    COUNT_RTOL,
    LOSS_RTOL,
    check_eval,
    check_grad,
    check_scalar,
    fail,
    stats_to_eval,
)
from .reference import (
    BINS,
    TorchImpl,
    np_accuracy,
    np_cross_entropy,
    np_cross_entropy_grad,
    np_evaluate,
)
from .report import format_paired
from .results import Row
from .timing import DISTURBED, MemoryLimit, OtherLoad, measure, measure_paired, wait_quiet


class Runner:
    """Times every (function, implementation) of a case and checks it against NumPy."""

    def __init__(self, ld: Any, torch: Any, mem: MemoryLimit, repeats: int, warmup: int,
                 log: Callable[[str], None], min_warmup_s: float = 0.0,
                 min_time_s: float = 0.0, log_rows: bool = True,
                 paired: bool = True) -> None:
        self.ld = ld
        self.measure_pairs = paired  # the alternating timings behind two developer targets
        self.log_rows = log_rows  # one progress line per timing (else one per case)
        self.torch = torch
        self.mem = mem
        self.repeats = repeats
        self.warmup = warmup
        self.min_warmup_s = min_warmup_s
        self.min_time_s = min_time_s
        self.log = log
        self.rows: list[Row] = []
        self.other_load: dict[str, float | None] = {}
        # case -> {"read limit" | "cross_entropy" | "evaluate": times}, timed in alternation
        self.paired: dict[str, dict[str, list[float]]] = {}
        self.notes: dict[str, list[str]] = {}  # case -> what was not timed, and why

    def _add(self, case: Case, function: str, impl: str, times: list[float], nbytes: int,
             note: str = "") -> Row:
        row = Row(case.name, function, impl, times, nbytes, note=note)
        self.rows.append(row)
        if self.log_rows:
            self.log(f"  [{case.name}] {function:<19} {impl:<24} {row.median_ms:10.2f} ms "
                     f"{row.gbps:7.2f} GB/s")
        return row

    def measure(self, fn: Callable[[], Any],
                setup: Callable[[], Any] | None = None) -> tuple[list[float], Any]:
        """``measure`` with this run's repeats, warm-up and minimum times."""
        return measure(fn, self.repeats, self.warmup, setup, min_warmup_s=self.min_warmup_s,
                       min_time_s=self.min_time_s)

    def run(self, case: Case) -> None:
        """All measurements of one case (the logits are never copied more than once)."""
        ld, x, t, ax, ii = self.ld, case.logits, case.target, case.axis, case.ignore_index
        rep, wu, measure = self.repeats, self.warmup, self.measure
        nb = x.nbytes
        kw = {"axis": ax, "ignore_index": ii}
        self.log(f"case {case.title}" if self.log_rows else
                 f"timing {CASE_NAMES.get(case.name, case.name)}: "
                 f"{case.title.split(' ', 1)[-1]} ...")
        monitor = OtherLoad()
        self.notes[case.name] = []

        buf = np.empty_like(x)
        np.copyto(buf, x)  # fault the pages in

        def restore() -> None:
            np.copyto(buf, x)

        # (c) memory limit
        reads = [(self._add(case, "read limit", label,
                            measure(lambda r=read: r(x))[0], nb), read)
                 for label, read in self.mem.read_variants()]
        for label, copy in self.mem.copy_variants():
            times = measure(lambda c=copy: c(x, buf))[0]
            if not np.array_equal(buf, x):
                fail(case.name, "copy limit", label, "the copy differs from its source")
            self._add(case, "copy limit", label, times, 2 * nb)

        # cross_entropy
        f = "cross_entropy"
        times, ref = measure(lambda: np_cross_entropy(x, t, ax, ii))
        self._add(case, f, "numpy", times, nb)
        times, got = measure(lambda: ld.cross_entropy(x, t, **kw))
        check_scalar((case.name, f, "lossdiag"), "loss", got, ref, LOSS_RTOL, 1e-7)
        self._add(case, f, "lossdiag", times, nb)
        tim = TorchImpl(self.torch, case) if self.torch is not None else None
        if tim is not None:
            times, got = measure(tim.cross_entropy)
            check_scalar((case.name, f, "torch"), "loss", got, ref, LOSS_RTOL, 1e-7)
            self._add(case, f, "torch", times, nb)

        # accuracy
        f = "accuracy"
        times, ref = measure(lambda: np_accuracy(x, t, ax, ii))
        self._add(case, f, "numpy", times, nb)
        n_valid = int(np.count_nonzero(t != ii))
        atol = max(2, COUNT_RTOL * n_valid) / n_valid
        times, got = measure(lambda: ld.accuracy(x, t, **kw))
        check_scalar((case.name, f, "lossdiag"), "accuracy", got, ref, 0.0, atol)
        self._add(case, f, "lossdiag", times, nb)
        if tim is not None:
            times, got = measure(tim.accuracy)
            check_scalar((case.name, f, "torch"), "accuracy", got, ref, 0.0, atol)
            self._add(case, f, "torch", times, nb)

        # cross_entropy_grad
        f = "cross_entropy_grad"
        times, (ref_loss, ref_grad) = measure(lambda: np_cross_entropy_grad(x, t, ax, ii))
        self._add(case, f, "numpy", times, 2 * nb)
        times, (loss, grad) = measure(lambda: ld.cross_entropy_grad(x, t, **kw))
        check_scalar((case.name, f, "lossdiag"), "loss", loss, ref_loss, LOSS_RTOL, 1e-7)
        check_grad((case.name, f, "lossdiag"), grad, ref_grad)
        del grad
        self._add(case, f, "lossdiag", times, 2 * nb)
        times, (loss, grad) = measure(lambda: ld.cross_entropy_grad(buf, t, out=buf, **kw),
                                      setup=restore)
        check_scalar((case.name, f, "lossdiag out=logits"), "loss", loss, ref_loss, LOSS_RTOL,
                     1e-7)
        check_grad((case.name, f, "lossdiag out=logits"), buf, ref_grad)
        del grad
        self._add(case, f, "lossdiag out=logits", times, 2 * nb, note="in place")
        if tim is not None:
            times, (loss, grad) = measure(tim.cross_entropy_grad)
            check_scalar((case.name, f, "torch fwd+bwd"), "loss", loss, ref_loss, LOSS_RTOL, 1e-7)
            check_grad((case.name, f, "torch fwd+bwd"), grad.numpy(), ref_grad)
            del grad
            tim.xg.grad = None
            self._add(case, f, "torch fwd+bwd", times, 2 * nb)
        del ref_grad

        # evaluate
        f = "evaluate"
        times, ref_ev = measure(lambda: np_evaluate(x, t, ax, ii, BINS))
        self._add(case, f, "numpy", times, nb)
        times, stats = measure(lambda: ld.evaluate(x, t, bins=BINS, **kw))
        check_eval((case.name, f, "lossdiag"), stats_to_eval(stats), ref_ev)
        self._add(case, f, "lossdiag", times, nb)
        if tim is not None:
            times, got_ev = measure(tim.evaluate)
            check_eval((case.name, f, "torch"), got_ev, ref_ev)
            self._add(case, f, "torch", times, nb)

        # The targets that compare lossdiag with itself or with the read limit are judged on
        # calls made in alternation (see measure_paired), with the fastest read variant.
        read_row, read_fn = min(reads, key=lambda rr: rr[0].median_ms)
        if not self.measure_pairs:
            self._end_case(case, monitor)
            return
        fns = {"read limit": lambda: read_fn(x),
               "cross_entropy": lambda: ld.cross_entropy(x, t, **kw),
               "evaluate": lambda: ld.evaluate(x, t, bins=BINS, **kw)}
        self.paired[case.name] = measure_paired(fns, max(15, 3 * rep), wu,
                                                min_warmup_s=self.min_warmup_s)
        if self.log_rows:
            self.log(f"  paired, read = {read_row.impl}: "
                     + format_paired({case.name: self.paired[case.name]}, False))
        self._end_case(case, monitor)

    def _end_case(self, case: Case, monitor: OtherLoad) -> None:
        other = monitor.value()
        self.other_load[case.name] = other
        if other is not None and other > DISTURBED and self.log_rows:
            self.log(f"WARNING [{case.name}]: other processes used ~{other:.2f} CPUs meanwhile")


def run_case_retrying(runner: Runner, case: Case, retries: int, quiet_wait: float,
                      log: Callable[[str], None]) -> None:
    """Run one case; re-run it (up to ``retries`` times) while other processes disturb it."""
    best: tuple[float, list[Row], dict[str, list[float]]] | None = None
    for attempt in range(retries + 1):
        if quiet_wait > 0:
            wait_quiet(quiet_wait, log)
        start = len(runner.rows)
        runner.run(case)
        other = runner.other_load.get(case.name)
        rows = runner.rows[start:]
        del runner.rows[start:]
        score = other if other is not None else 0.0
        if best is None or score < best[0]:
            best = (score, rows, runner.paired.get(case.name, {}))
        if score <= DISTURBED:
            break
        if attempt < retries:
            log(f"  [{case.name}] disturbed (~{score:.2f} CPUs used by others): retrying")
    assert best is not None
    runner.other_load[case.name] = best[0]
    runner.rows.extend(best[1])
    runner.paired[case.name] = best[2]
