"""Reporting: the machine, the tables (plain and markdown), the targets and the user summary."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np

from .cases import CASE_NAMES
from .results import Row, Target, median_ms, ratio
from .timing import DISTURBED, paired_ratio


def machine_info(ld: Any, torch: Any, threads: int) -> dict[str, Any]:
    """CPU model, caches, library versions and lossdiag.info()."""
    model = platform.processor() or "unknown"
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_fp16", "amx_tile")
            if f in flags]
    caches: dict[str, str] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in sorted(os.listdir(base)):
            if not d.startswith("index"):
                continue
            with open(f"{base}/{d}/level") as fh:
                level = fh.read().strip()
            with open(f"{base}/{d}/type") as fh:
                kind = fh.read().strip()
            with open(f"{base}/{d}/size") as fh:
                size = fh.read().strip()
            if kind != "Instruction":
                caches[f"L{level}"] = size
    except OSError:
        pass
    try:
        info = dict(ld.info())
    except Exception as exc:  # pragma: no cover - reported, not fatal
        info = {"error": repr(exc)}
    try:
        load = float(os.getloadavg()[0])
    except OSError:
        load = None
    return {
        "load_avg_1min_at_end": load,
        "cpu": model, "logical_cpus": os.cpu_count(), "cpu_simd_flags": simd, "caches": caches,
        "python": platform.python_version(), "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None), "threads": threads, "lossdiag": info,
    }


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


COLUMNS = ("case", "function", "impl", "median ms", "GB/s", "vs NumPy", "vs torch",
           "of mem limit")


def table_cells(rows: list[Row]) -> list[list[str]]:
    """The results table as strings."""
    return [[r.case, r.function, r.impl, f"{r.median_ms:.2f}", f"{r.gbps:.1f}",
             _fmt(r.vs_numpy, ".1f", "x"), _fmt(r.vs_torch, ".1f", "x"),
             _fmt(r.frac_limit, ".2f")] for r in rows]


def format_plain(rows: list[Row]) -> str:
    """Aligned plain-text table."""
    cells = [list(COLUMNS)] + table_cells(rows)
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = []
    for k, c in enumerate(cells):
        lines.append("  ".join(s.ljust(w) if i < 3 else s.rjust(w)
                               for i, (s, w) in enumerate(zip(c, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(rows: list[Row]) -> str:
    """GitHub markdown table (for the README)."""
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(COLUMNS) - 3)) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in table_cells(rows)]
    return "\n".join(lines)


def format_header(info: dict[str, Any], titles: list[str], preset: str, repeats: int,
                  warmup: int, markdown: bool, min_time: float = 0.0,
                  min_warmup: float = 0.0, notes: dict[str, list[str]] | None = None) -> str:
    """Machine and configuration description; ``notes`` (case -> lines) follow their case."""
    ldi = info["lossdiag"]
    items = [
        f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs; "
        f"{', '.join(info['cpu_simd_flags']) or 'no AVX flags'}; caches "
        f"{', '.join(f'{k} {v}' for k, v in info['caches'].items()) or 'unknown'})",
        f"lossdiag.info(): {ldi}",
        f"threads: {info['threads']} (lossdiag and torch); Python {info['python']}, "
        f"NumPy {info['numpy']}, torch {info['torch'] or 'not installed'}",
        f"preset {preset}: median of >= {repeats} timed calls and >= {min_time:g} s of them, "
        f"after >= {warmup} warm-up calls and >= {min_warmup:g} s of them",
    ]
    for title in titles:
        name = title.split(" ", 1)[0]
        items += [f"case {title}"] + [f"case {name}: {n}" for n in (notes or {}).get(name, [])]
    busy = info.get("busy_cpus_before_run")
    if busy is not None and busy > 0.3:
        items.append(f"WARNING: ~{busy:.1f} CPUs were busy with other work; timings unreliable")
    during = {k: v for k, v in info.get("other_cpus_during_case", {}).items() if v is not None}
    if during:
        items.append("CPUs used by other processes during each case (0 = quiet machine): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in during.items())
                     + ("  WARNING: timings disturbed" if max(during.values()) > DISTURBED else ""))
    prefix = "- " if markdown else ""
    return "\n".join(prefix + s for s in items)


def format_paired(paired: dict[str, dict[str, list[float]]], markdown: bool) -> str:
    """One line per case: medians of the alternating timings and the round-by-round ratios."""
    lines = []
    for case, pt in paired.items():
        if not pt:
            continue
        meds = ", ".join(f"{n} {np.median(v):.2f} ms" for n, v in pt.items())
        r_read = paired_ratio(pt, "cross_entropy", "read limit")
        s = f"[{case}] {meds}; cross_entropy / read {r_read:.2f}"
        if "evaluate" in pt:  # not timed where the confusion matrix is too large
            s += f", evaluate / cross_entropy {paired_ratio(pt, 'evaluate', 'cross_entropy'):.2f}"
        s += f" ({len(pt['cross_entropy'])} rounds)"
        lines.append(("- " if markdown else "") + s)
    return "\n".join(lines)


def format_targets(targets: list[Target], markdown: bool) -> str:
    """PASS/MISS lines."""
    lines = []
    for tg in targets:
        val = "n/a" if tg.value is None else f"{tg.value:.2f}"
        tag = "" if tg.official else " (info)"
        s = f"{tg.status:4}  [{tg.case}] {tg.text}: {val} (need {tg.op} {tg.threshold:g}){tag}"
        lines.append(("- " if markdown else "") + s)
    return "\n".join(lines)


SUMMARY_FUNCTIONS = (("cross_entropy", "torch", "mean loss"),
                     ("accuracy", "torch", "top-1 accuracy"),
                     ("cross_entropy_grad", "torch fwd+bwd", "loss and gradient"),
                     ("evaluate", "torch", "loss, accuracy, confusion matrix, 4 histograms"))


def _ms(v: float | None) -> str:
    """Milliseconds with 3 significant digits (toy shapes take microseconds)."""
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def _speedup(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}x" if x >= 10 else (f"{x:.1f}x" if x >= 1 else f"{x:.2g}x")


def format_summary(rows: list[Row], info: dict[str, Any], cases: Sequence[str], preset: str,
                   elapsed: float, markdown: bool = False,
                   case_titles: Sequence[str] = (),
                   notes: dict[str, list[str]] | None = None) -> str:
    """The end of ``lossdiag bench``: what was measured, speed-ups, and on which machine.

    ``notes`` (case -> lines, e.g. a function that was not timed and why) follow the case's table.
    """

    def med(case: str, function: str, impl: str) -> float | None:
        return median_ms(rows, case, function, impl)

    have_torch = any(r.impl.startswith("torch") for r in rows)
    head = ["function", "computes", "lossdiag ms", "NumPy ms", "vs NumPy"]
    if have_torch:
        head += ["torch ms", "vs torch"]
    vs_np: list[float] = []
    vs_t: list[float] = []
    lines: list[str] = []
    titles = {t.split(" ", 1)[0]: t.split(" ", 1)[1] for t in case_titles if " " in t}
    for case in cases:
        table = [head]
        for function, torch_impl, what in SUMMARY_FUNCTIONS:
            ld_ms = med(case, function, "lossdiag")
            if ld_ms is None:
                continue
            np_ms, t_ms = med(case, function, "numpy"), med(case, function, torch_impl)
            a, b = ratio(np_ms, ld_ms), ratio(t_ms, ld_ms)
            vs_np += [a] if a is not None else []
            vs_t += [b] if b is not None else []
            row = [function, what, _ms(ld_ms), _ms(np_ms), _speedup(a)]
            if have_torch:
                row += [_ms(t_ms), _speedup(b)]
            table.append(row)
        title = f"{CASE_NAMES.get(case, case)}: {titles.get(case, '')}".rstrip(": ")
        if markdown:
            lines += [f"**{title}**", "", "| " + " | ".join(head) + " |",
                      "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in table[1:]]
        else:
            widths = [max(len(r[i]) for r in table) for i in range(len(head))]
            lines.append(title)
            lines += ["  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                       for i, (c, w) in enumerate(zip(r, widths)))
                      for r in table]
        case_notes = (notes or {}).get(case, [])
        if case_notes:
            lines += ([""] + case_notes) if markdown else ["  " + n for n in case_notes]
        lines.append("")

    def span(v: list[float], other: str) -> str:
        return (f"{_speedup(float(np.median(v)))} over {other} (range {_speedup(min(v))} to "
                f"{_speedup(max(v))})")

    ldi = info.get("lossdiag", {})
    verdict = []
    if vs_np:
        verdict.append(span(vs_np, "NumPy"))
    if vs_t:
        verdict.append(span(vs_t, "PyTorch on the CPU"))
    simd = ldi.get("simd", "?") if isinstance(ldi, dict) else "?"
    out = lines + [
        ("Summary: median speed-up " + " and ".join(verdict) if verdict
         else "Summary: lossdiag timed alone")
        + " ('vs' = their median time / lossdiag's; above 1x lossdiag is faster).",
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['threads']} "
        f"threads, lossdiag {ldi.get('version', '?') if isinstance(ldi, dict) else '?'} using "
        f"{simd}; Python {info['python']}, NumPy {info['numpy']}, "
        f"torch {info['torch'] or 'not installed (pip install torch to compare)'}.",
        f"Every lossdiag{' and torch' if have_torch else ''} result was checked against NumPy; "
        f"{preset} preset, {elapsed:.0f} s.",
    ]
    busy = [v for v in [info.get("busy_cpus_before_run"),
                        *info.get("other_cpus_during_case", {}).values()] if v is not None]
    if busy and max(busy) > DISTURBED:
        out.append(f"Note: other programs kept up to ~{max(busy):.1f} CPUs busy during the run, "
                   "so these timings are noisy; rerun on a quiet machine for stable numbers.")
    hints = []
    if preset == "tiny":
        hints.append("toy shapes: the timings mean nothing")
    elif preset != "full":
        hints.append("run without --quick for full-size batches")
    hints.append("--details prints every timing, --json FILE saves them")
    out.append("(" + "; ".join(hints) + ")")
    if markdown:
        out = [f"- {x}" if i >= len(lines) else x for i, x in enumerate(out)]
    return "\n".join(out)
