#!/usr/bin/env python
"""Generate the labelled validation suite: real training runs with planted causes.

Every scenario of :mod:`lossdiag.demo.scenarios` is trained with several seeds (NumPy models whose
backward pass starts from ``lossdiag.cross_entropy_grad``; validation statistics from
``lossdiag.Metrics``), the histories are written as small JSON fixtures, and the diagnosis is
scored against the planted causes: per-code precision and recall.

Usage::

    python scripts/make_validation_suite.py                  # write tests/fixtures/histories
    python scripts/make_validation_suite.py --check          # only score, write nothing
    python scripts/make_validation_suite.py --seeds 5 --out /tmp/suite

Needs the compiled core (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "histories"

# statistics kept in the fixtures (the rest -- confusion matrices, per-class IoU/Dice,
# margin histograms -- is not read by the diagnosis and would only make the files large)
STATS_KEYS = ("loss", "accuracy", "balanced_accuracy", "mean_iou", "ece",
              "mean_true_class_prob", "frac_true_prob_below_inv_e", "small_margin_correct_frac",
              "label_freq", "pred_freq", "recall", "reliability", "conf_hist", "true_prob_hist",
              "bin_edges", "num_classes")
# histograms are kept only at the best-validation-loss epoch and the last epoch (what the
# report and the overconfident check read)
HEAVY_KEYS = ("reliability", "conf_hist", "true_prob_hist", "bin_edges")


def trim_statistics(h: Any) -> None:
    """Drop the histogram statistics except at the best and the last epoch (in place)."""
    import numpy as np

    vl = h.val.get("loss")
    keep = {len(h) - 1}
    if vl is not None and np.isfinite(vl).any():
        keep.add(int(np.nanargmin(np.where(np.isfinite(vl), vl, np.nan))))
    for i, st in enumerate(h.stats):
        if st is not None and i not in keep:
            for k in HEAVY_KEYS:
                st.pop(k, None)


def score(results: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-code precision / recall of ``results`` (dicts with expected, causes, allowed, found).

    A planted code counts as found only with the planted cause (where one is given); a code
    neither planted nor allowed is a false alarm.
    """
    from lossdiag.diagnosis import CODES

    table = {c: {"tp": 0, "fp": 0, "fn": 0, "allowed": 0} for c in CODES}
    for r in results:
        found: dict[str, str | None] = r["found"]
        for c in r["expected"]:
            want = r["causes"].get(c)
            ok = c in found and (want is None or found[c] == want)
            table[c]["tp" if ok else "fn"] += 1
            if c in found and not ok:
                table[c]["fp"] += 1  # found with the wrong cause
        for c in found:
            if c in r["expected"]:
                continue
            table[c]["allowed" if c in r["allowed"] else "fp"] += 1
    for row in table.values():
        tp, fp, fn = row["tp"], row["fp"], row["fn"]
        row["precision"] = tp / (tp + fp) if tp + fp else None
        row["recall"] = tp / (tp + fn) if tp + fn else None
    return table


def markdown(table: Mapping[str, Mapping[str, Any]], n_runs: int) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = ["| code | planted in | found (TP) | missed (FN) | false alarms (FP) | "
             "also reported, allowed | precision | recall |",
             "|---|---|---|---|---|---|---|---|"]
    for code, r in table.items():
        lines.append(f"| `{code}` | {r['tp'] + r['fn']} | {r['tp']} | {r['fn']} | {r['fp']} | "
                     f"{r['allowed']} | {f(r['precision'])} | {f(r['recall'])} |")
    lines.append(f"\n{n_runs} runs.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=4, help="seeds per scenario (default 4)")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="first seed (use e.g. 100 for runs never looked at while tuning)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture directory")
    ap.add_argument("--check", action="store_true", help="score only, write no files")
    ap.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    args = ap.parse_args(argv)

    from lossdiag.demo.scenarios import SCENARIOS, run_scenario
    from lossdiag.diagnosis import diagnose

    names = args.only or sorted(SCENARIOS)
    if not args.check:
        args.out.mkdir(parents=True, exist_ok=True)
    results = []
    t_all = time.perf_counter()
    for name in names:
        sc = SCENARIOS[name]
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            t0 = time.perf_counter()
            h = run_scenario(name, seed)
            dt = time.perf_counter() - t0
            if not args.check:
                h.meta.pop("train_seconds", None)
                trim_statistics(h)
                h.to_json(args.out / f"{name}_s{seed}.json", stats_keys=STATS_KEYS, digits=5)
            d = diagnose(h if args.check else type(h).load(args.out / f"{name}_s{seed}.json"))
            found = {f.code: f.cause for f in d.findings}
            r = {"name": name, "seed": seed, "expected": list(sc.expected),
                 "causes": dict(sc.causes), "allowed": list(sc.allowed), "found": found}
            results.append(r)
            extra = set(found) - set(sc.expected) - set(sc.allowed)
            missing = [c for c in sc.expected
                       if c not in found or (c in sc.causes and found[c] != sc.causes[c])]
            status = "ok " if not extra and not missing else "BAD"
            print(f"{status} {name:22s} seed {seed}  {dt:5.2f}s  found {found}"
                  + (f"  missing {missing}" if missing else "")
                  + (f"  unexpected {sorted(extra)}" if extra else ""))
    table = score(results)
    print()
    print(markdown(table, len(results)))
    print(f"\ntotal {time.perf_counter() - t_all:.1f}s")
    if not args.check:
        (args.out / "suite.json").write_text(json.dumps(
            {"seeds": args.seeds, "runs": results,
             "score": {k: {kk: vv for kk, vv in v.items()} for k, v in table.items()}},
            indent=1) + "\n")
    bad = sum(1 for r in results if set(r["found"]) - set(r["expected"]) - set(r["allowed"])
              or any(c not in r["found"] for c in r["expected"]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
