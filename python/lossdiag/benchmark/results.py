"""What the timings mean: one ``Row`` per timing, its ratios, and the performance ``Target``s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .timing import paired_ratio

# The functions a case times, in order (the two limits first).
FUNCTIONS = ("read limit", "copy limit", "cross_entropy", "accuracy", "cross_entropy_grad",
             "evaluate")


@dataclass
class Row:
    """One timed (case, function, implementation)."""

    case: str
    function: str
    impl: str
    times_ms: list[float]
    nbytes: int
    median_ms: float = 0.0
    min_ms: float = 0.0
    gbps: float = 0.0
    vs_numpy: float | None = None
    vs_torch: float | None = None
    frac_limit: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        self.median_ms = float(np.median(self.times_ms))
        self.min_ms = float(np.min(self.times_ms))
        self.gbps = self.nbytes / (self.median_ms * 1e-3) / 1e9


@dataclass
class Target:
    """A performance goal and whether this run met it."""

    case: str
    text: str
    value: float | None
    op: str
    threshold: float
    official: bool
    passed: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if self.value is not None and np.isfinite(self.value):
            self.passed = (self.value >= self.threshold if self.op == ">="
                           else self.value <= self.threshold)

    @property
    def status(self) -> str:
        """PASS, MISS or n/a."""
        return "n/a" if self.passed is None else ("PASS" if self.passed else "MISS")


def fill_ratios(rows: list[Row]) -> None:
    """Speed-up vs NumPy / torch (their time / this time) and fraction of the memory limit."""
    by: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        by.setdefault((r.case, r.function), []).append(r)

    def best(case: str, function: str) -> float | None:
        lim = by.get((case, function), [])
        return min(r.median_ms for r in lim) if lim else None

    for (case, function), group in by.items():
        npy = [r for r in group if r.impl == "numpy"]
        tch = [r for r in group if r.impl.startswith("torch")]
        limit = best(case, "copy limit" if function == "cross_entropy_grad" else "read limit")
        for r in group:
            if function.endswith("limit"):
                continue
            r.vs_numpy = npy[0].median_ms / r.median_ms if npy else None
            r.vs_torch = tch[0].median_ms / r.median_ms if tch else None
            r.frac_limit = limit / r.median_ms if limit else None


def median_ms(rows: Sequence[Row], case: str, function: str, impl: str) -> float | None:
    """The median time of one (case, function, implementation), None when not timed."""
    for r in rows:
        if r.case == case and r.function == function and r.impl == impl:
            return r.median_ms
    return None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is missing (or b is 0)."""
    return a / b if a is not None and b else None


def evaluate_targets(rows: list[Row], cases: Sequence[str],
                     paired: dict[str, dict[str, list[float]]] | None = None) -> list[Target]:
    """The performance goals; the NCHW ones are official, the others informational.

    Where ``paired`` has a case's alternating timings (Runner.run), the two targets that compare
    lossdiag's cross_entropy with the read limit and evaluate with cross_entropy use their
    round-by-round ratios; otherwise the separately measured medians.
    """

    def med(case: str, function: str, impl: str) -> float | None:
        return median_ms(rows, case, function, impl)

    out: list[Target] = []
    for case in cases:
        off = case == "nchw"
        ce = med(case, "cross_entropy", "lossdiag")
        limits = [r.median_ms for r in rows if r.case == case and r.function == "read limit"]
        ev = med(case, "evaluate", "lossdiag")
        pt = (paired or {}).get(case)
        if pt:
            ce_read = paired_ratio(pt, "cross_entropy", "read limit")
            ev_ce = paired_ratio(pt, "evaluate", "cross_entropy") if "evaluate" in pt else None
            how = ", paired"
        else:
            ce_read = ratio(ce, min(limits) if limits else None)
            ev_ce = ratio(ev, ce)
            how = ""
        out += [
            Target(case, "cross_entropy >= 15x faster than NumPy",
                   ratio(med(case, "cross_entropy", "numpy"), ce), ">=", 15, off),
            Target(case, "cross_entropy >= 8x faster than torch F.cross_entropy",
                   ratio(med(case, "cross_entropy", "torch"), ce), ">=", 8, off),
            Target(case, f"cross_entropy time within 2x of the read limit{how}",
                   ce_read, "<=", 2, off),
            Target(case, "cross_entropy_grad >= 10x faster than torch fwd+bwd",
                   ratio(med(case, "cross_entropy_grad", "torch fwd+bwd"),
                         med(case, "cross_entropy_grad", "lossdiag")), ">=", 10, off),
            Target(case, f"evaluate <= 1.5x the time of cross_entropy{how}",
                   ev_ce, "<=", 1.5, off),
            Target(case, "evaluate >= 40x faster than the NumPy chain",
                   ratio(med(case, "evaluate", "numpy"), ev), ">=", 40, off),
        ]
    return out
