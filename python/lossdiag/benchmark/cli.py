"""The command line: options, the run over the cases, and what is printed and saved."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .cases import CASES, PRESETS, iter_cases
from .checks import BenchmarkMismatch
from .report import (
    format_header,
    format_markdown,
    format_paired,
    format_plain,
    format_summary,
    format_targets,
    machine_info,
)
from .results import evaluate_targets, fill_ratios
from .runner import Runner, run_case_retrying
from .timing import MemoryLimit, busy_cpus


def _parse(argv: Sequence[str] | None, developer: bool = False) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="lossdiag bench",
        description=(
            "Time lossdiag's CPU kernels (cross_entropy, accuracy, cross_entropy_grad, evaluate) "
            "on this machine, side by side with NumPy and PyTorch (when installed), on a "
            "segmentation batch (channels first and last), a 1000-class classification batch, "
            "a classification head small enough to stay in cache and 32000-class language-model "
            "rows. Every result is checked against NumPy. Ends with a summary of the "
            "speed-ups; the full run takes 2-4 minutes, --quick about 30 s."))
    p.add_argument("--quick", action="store_true",
                   help="smaller shapes and fewer repeats (about 30 s)")
    p.add_argument("--tiny", action="store_true",
                   help="toy shapes (smoke test of the harness; timings are meaningless)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for lossdiag and torch (default: lossdiag's current setting)")
    p.add_argument("--repeats", type=int, default=None,
                   help="minimum number of timed calls per measurement")
    p.add_argument("--min-time", type=float, default=None, metavar="SECONDS",
                   help="time each measurement for at least SECONDS in all (full preset: 1.0)")
    p.add_argument("--min-warmup", type=float, default=None, metavar="SECONDS",
                   help="warm up each measurement for at least SECONDS (full preset: 0.5)")
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma separated subset of {','.join(CASES)}")
    p.add_argument("--no-torch", action="store_true", help="skip the torch baseline")
    p.add_argument("--json", metavar="FILE", default=None, help="write results as JSON")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    p.add_argument("--details", action="store_true",
                   help="also print every timing (each implementation, memory limits)")
    if developer:
        p.add_argument("--strict", action="store_true",
                       help="exit with status 1 if an official (NCHW) target is missed")
    p.add_argument("--seed", type=int, default=0, help="random seed of the data")
    p.add_argument("--retries", type=int, default=0,
                   help="re-run a case up to N times when other processes disturbed it "
                        "(keeps the least disturbed attempt)")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                   help="before each case, wait up to SECONDS for the machine to go quiet")
    args = p.parse_args(argv)
    args.strict = bool(getattr(args, "strict", False))
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad or not cases:
        p.error(f"--cases: unknown {bad}; choose from {','.join(CASES)}")
    args.cases = [c for c in CASES if c in cases]
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.retries < 0 or args.quiet_wait < 0:
        p.error("--retries and --quiet-wait must be >= 0")
    if (args.min_time is not None and args.min_time < 0) or (
            args.min_warmup is not None and args.min_warmup < 0):
        p.error("--min-time and --min-warmup must be >= 0")
    return args


def main(argv: Sequence[str] | None = None, *, developer: bool = False) -> int:
    """Run the benchmark; return 0, 1 (``--strict`` and a target missed) or 2 (wrong result).

    ``developer=True`` (bench/bench_core.py) prints every timing and the performance targets;
    otherwise the run ends with a summary for users (``--details`` adds the full table).
    """
    args = _parse(argv, developer)
    import lossdiag as ld

    torch: Any = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None

    preset_name = "tiny" if args.tiny else ("quick" if args.quick else "full")
    preset = PRESETS[preset_name]
    repeats = args.repeats or preset["repeats"]
    warmup = preset["warmup"]
    min_time = preset["min_time_s"] if args.min_time is None else args.min_time
    min_warmup = preset["min_warmup_s"] if args.min_warmup is None else args.min_warmup

    old_ld_threads = ld.get_num_threads()
    old_torch_threads = torch.get_num_threads() if torch is not None else None
    if args.threads is not None:
        ld.set_num_threads(args.threads)
    threads = int(ld.get_num_threads())
    if torch is not None:
        torch.set_num_threads(threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load0 = busy_cpus()
    if load0 is not None and load0 > 0.3:
        log(f"WARNING: other processes keep ~{load0:.1f} CPUs busy; timings will be unreliable "
            f"(OpenMP threads suffer most when a core is taken)")

    mem = MemoryLimit(getattr(ld, "_core", None), threads)
    runner = Runner(ld, torch, mem, repeats, warmup, log, min_warmup_s=min_warmup,
                    min_time_s=min_time, log_rows=developer or args.details, paired=developer)
    titles: list[str] = []
    t_start = time.perf_counter()
    try:
        for case in iter_cases(preset, args.cases, args.seed):
            titles.append(case.title)
            run_case_retrying(runner, case, args.retries, args.quiet_wait, log)
            del case
    except BenchmarkMismatch as exc:
        print(f"lossdiag bench: WRONG RESULT: {exc}", file=sys.stderr)
        return 2
    finally:
        mem.close()
        ld.set_num_threads(old_ld_threads)
        if torch is not None:
            torch.set_num_threads(old_torch_threads)
    elapsed = time.perf_counter() - t_start

    rows = runner.rows
    fill_ratios(rows)
    targets = evaluate_targets(rows, args.cases, runner.paired)
    info = machine_info(ld, torch, threads)
    info["busy_cpus_before_run"] = load0
    info["other_cpus_during_case"] = runner.other_load
    md = args.markdown
    official = [tg for tg in targets if tg.official]
    if developer or args.details:
        print(format_header(info, titles, preset_name, repeats, warmup, md, min_time, min_warmup,
                            notes=runner.notes))
        print()
        print(format_markdown(rows) if md else format_plain(rows))
        print()
        if any(runner.paired.values()):
            print(("**Paired**" if md else "Paired") + " (read limit, cross_entropy and evaluate "
                  "timed in alternation, medians of per-round ratios)")
            print(format_paired(runner.paired, md))
            print()
    if developer:
        print(("**Targets**" if md else "Targets") + (" (indicative only: not the full-size "
                                                     "shapes)" if preset_name != "full" else ""))
        print(format_targets(targets, md))
        n_pass = sum(tg.passed is True for tg in official)
        print(f"\nofficial (nchw) targets: {n_pass}/{len(official)} PASS; "
              f"all results checked against NumPy; total {elapsed:.1f} s")
    else:
        print(format_summary(rows, info, [c for c in CASES if c in args.cases], preset_name,
                             elapsed, md, case_titles=titles, notes=runner.notes))

    if args.json:
        payload = {
            "machine": info, "preset": preset_name, "repeats": repeats, "warmup": warmup,
            "min_time_s": min_time, "min_warmup_s": min_warmup,
            "cases": titles, "elapsed_s": elapsed,
            "results": [asdict(r) for r in rows],
            "paired": runner.paired,
            "notes": runner.notes,
            "targets": [dict(asdict(tg), status=tg.status) for tg in targets],
        }
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1, default=str)
    if args.strict and any(tg.passed is False for tg in official):
        return 1
    return 0
