"""Score the diagnosis against labelled training logs.

``python -m lossdiag.diagnosis.evaluate DIR [DIR ...] [--verbose] [--markdown] [--json FILE]``

Each DIR holds training logs and a ``labels.json``::

    {"judged": ["non-finite", "diverging", ...],
     "files": {"61_run.csv": {"expected": ["stuck"], "optional": ["slow-tail"],
                              "num_classes": 2}, ...}}

A file's ``expected`` codes must be reported; its ``optional`` codes are neutral (neither
rewarded nor penalised); any other judged code reported is a false alarm.  A file with an empty
``expected`` list is a healthy run.  A code counts as reported when ``diagnose`` returns a finding
with that code at any severity.

Printed per set: per-code precision / recall, micro precision / recall, and the healthy runs
with a false alarm (any severity) and with a warning or error.  Exit status 0.

>>> s = Score()
>>> s.add("a.csv", expected={"stuck"}, optional=set(), found={"stuck": "warning"},
...       judged={"stuck", "diverging"})
>>> s.add("b.csv", expected=set(), optional=set(), found={"diverging": "warning"},
...       judged={"stuck", "diverging"})
>>> round(s.micro()[0], 2), round(s.micro()[1], 2)
(0.5, 1.0)
>>> s.healthy_alarms()
(1, 1, 1)
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Score", "score_dir", "main"]


@dataclass
class FileResult:
    name: str
    expected: set[str]
    optional: set[str]
    found: dict[str, str]  # judged code -> worst severity
    error: str | None = None

    @property
    def missed(self) -> set[str]:
        return self.expected - set(self.found)

    @property
    def false(self) -> set[str]:
        return set(self.found) - self.expected - self.optional


@dataclass
class Score:
    """Accumulated true / false positives per code over labelled files."""

    files: list[FileResult] = field(default_factory=list)
    codes: set[str] = field(default_factory=set)

    def add(self, name: str, *, expected: set[str], optional: set[str],
            found: Mapping[str, str], judged: Iterable[str], error: str | None = None) -> None:
        judged = set(judged)
        self.codes |= judged
        self.files.append(FileResult(name, set(expected) & judged, set(optional) & judged,
                                     {c: s for c, s in found.items() if c in judged}, error))

    def per_code(self) -> dict[str, tuple[int, int, int]]:
        """code -> (true positives, false positives, false negatives)."""
        out = {c: [0, 0, 0] for c in sorted(self.codes)}
        for f in self.files:
            for c in f.expected:
                out[c][0 if c in f.found else 2] += 1
            for c in f.false:
                out[c][1] += 1
        return {c: (v[0], v[1], v[2]) for c, v in out.items()}

    def micro(self) -> tuple[float, float]:
        tp = fp = fn = 0
        for a, b, c in self.per_code().values():
            tp, fp, fn = tp + a, fp + b, fn + c
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / (tp + fn) if tp + fn else 1.0
        return p, r

    def healthy_alarms(self) -> tuple[int, int, int]:
        """(healthy runs, with any false alarm, with a warning/error false alarm)."""
        healthy = [f for f in self.files if not f.expected]
        anyf = sum(bool(f.false) for f in healthy)
        warn = sum(any(f.found[c] in ("warning", "error") for c in f.false) for f in healthy)
        return len(healthy), anyf, warn

    def table(self, title: str) -> str:
        """Markdown table of the scores."""
        lines = [f"**{title}** ({len(self.files)} runs)", "",
                 "| code | expected | found | false alarms | precision | recall |",
                 "|---|---:|---:|---:|---:|---:|"]
        for c, (tp, fp, fn) in self.per_code().items():
            p = f"{tp / (tp + fp):.2f}" if tp + fp else "-"
            r = f"{tp / (tp + fn):.2f}" if tp + fn else "-"
            lines.append(f"| `{c}` | {tp + fn} | {tp} | {fp} | {p} | {r} |")
        p, r = self.micro()
        n, anyf, warn = self.healthy_alarms()
        lines.append(f"| **micro** | | | | **{p:.2f}** | **{r:.2f}** |")
        lines += ["", f"Healthy runs: {n}; with a false alarm: {anyf}; with a warning or error: "
                      f"{warn}."]
        return "\n".join(lines)


def _worst(findings: Iterable[Any]) -> dict[str, str]:
    rank = {"info": 0, "warning": 1, "error": 2}
    out: dict[str, str] = {}
    for f in findings:
        if f.code not in out or rank[f.severity] > rank[out[f.code]]:
            out[f.code] = f.severity
    return out


def score_dir(directory: str | Path, *, verbose: bool = False) -> Score:
    """Diagnose every labelled file of ``directory`` and score the findings."""
    from ..history import History
    from . import diagnose

    d = Path(directory)
    labels = json.loads((d / "labels.json").read_text(encoding="utf-8"))
    judged = set(labels["judged"])
    score = Score()
    for name, lab in sorted(labels["files"].items()):
        err = None
        found: dict[str, str] = {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                h = History.from_path(d / name, num_classes=lab.get("num_classes"))
                res = diagnose(h, num_classes=lab.get("num_classes"))
            found = _worst(res.findings)
        except Exception as exc:  # noqa: BLE001 - a scorer reports every failure and goes on
            err = f"{type(exc).__name__}: {exc}"
        score.add(name, expected=set(lab["expected"]), optional=set(lab.get("optional", [])),
                  found=found, judged=judged, error=err)
        if verbose:
            f = score.files[-1]
            mark = "ok " if not f.missed and not f.false and err is None else "BAD"
            print(f"{mark} {name}: expected={sorted(f.expected)} found="
                  f"{ {c: s for c, s in sorted(found.items())} }"
                  + (f" missed={sorted(f.missed)}" if f.missed else "")
                  + (f" false={sorted(f.false)}" if f.false else "")
                  + (f" ERROR {err}" if err else ""))
    return score


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lossdiag.diagnosis.evaluate",
                                 description="Score lossdiag.diagnose on labelled log sets.")
    ap.add_argument("dirs", nargs="+", metavar="DIR", help="directory with logs + labels.json")
    ap.add_argument("--verbose", "-v", action="store_true", help="one line per file")
    ap.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    args = ap.parse_args(argv)
    report: dict[str, Any] = {}
    for dd in args.dirs:
        s = score_dir(dd, verbose=args.verbose)
        print(s.table(str(dd)))
        print()
        p, r = s.micro()
        n, anyf, warn = s.healthy_alarms()
        report[str(dd)] = {"runs": len(s.files), "micro_precision": p, "micro_recall": r,
                           "per_code": s.per_code(), "healthy": n,
                           "healthy_false_alarm": anyf, "healthy_warning": warn,
                           "errors": [f.name for f in s.files if f.error]}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
