"""The ``lossdiag diagnose`` subcommand.

``lossdiag diagnose PATH [--num-classes C] [--format text|json|html] [--out FILE]
[--map KEY=COLUMN ...] [--fail-on info|warning|error]``

PATH is any supported training log (the format is detected) or a directory holding one.
Exit status: 0 diagnosed; 1 a finding at or above ``--fail-on`` severity; 2 the log could not be
read, held too little to judge (no loss column, too few points), or the report could not be
written - with one line on standard error naming the file and what was expected.

>>> import argparse
>>> from lossdiag.diagnosis import cli
>>> parser = argparse.ArgumentParser(prog="lossdiag")
>>> _ = cli.add_parser(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["diagnose", "run.csv", "--num-classes", "10", "--format", "json"])
>>> args.num_classes, args.format
(10, 'json')
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``diagnose`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "diagnose", help="explain a training history (loss curves) with evidence",
        description="Read a training log (Keras History/CSVLogger, Lightning metrics.csv, "
                    "Hugging Face trainer_state.json, TensorBoard events, plain CSV/JSON, "
                    "lossdiag history JSON), recognise what is wrong, and explain it with the "
                    "run's own numbers.")
    p.add_argument("path", metavar="PATH", help="training log file or a directory holding one")
    p.add_argument("--num-classes", type=_positive_int, default=None, metavar="C",
                   help="number of classes (enables chance-level ln C checks)")
    p.add_argument("--format", choices=("text", "json", "html"), default="text",
                   help="report format (default: text)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="write the report to FILE instead of standard output")
    p.add_argument("--map", action="append", default=[], metavar="KEY=COLUMN",
                   help="column mapping for plain CSV/JSON logs, e.g. --map val/loss=vl "
                        "--map epoch=ep (keys: epoch, step, lr, train/<metric>, val/<metric>)")
    p.add_argument("--fail-on", choices=("info", "warning", "error"), default=None,
                   help="exit with status 1 if a finding of this severity or worse is found")
    p.set_defaults(func=run)
    return p


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {v}")
    return v


def _mapping(items: list[str]) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--map expects KEY=COLUMN, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _fail(msg: str) -> int:
    print(f"lossdiag diagnose: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run ``lossdiag diagnose`` with parsed arguments; returns the exit status.

    Every failure ends in one line on standard error that names the file and what was
    expected, with exit status 2: an unreadable log, a log with too little to judge, an output
    path that cannot be written.
    """
    from ..history import History, HistoryFormatError
    from . import diagnose

    path = args.path
    out = args.out
    if out is not None:
        op = Path(out)
        if op.is_dir():
            return _fail(f"--out {out}: is a directory (expected a file path)")
        if not op.parent.is_dir():
            return _fail(f"--out {out}: directory {str(op.parent)!r} does not exist")
    try:
        mapping = _mapping(list(getattr(args, "map", []) or []))
    except ValueError as exc:
        return _fail(str(exc))
    try:
        history = History.from_path(path, num_classes=args.num_classes, mapping=mapping)
        d = diagnose(history, num_classes=args.num_classes)
    except (HistoryFormatError, FileNotFoundError, ImportError) as exc:
        return _fail(str(exc))
    except (ValueError, TypeError) as exc:
        return _fail(f"{path}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a CLI user gets one line, never a traceback
        return _fail(f"{path}: could not be diagnosed ({type(exc).__name__}: {exc}); please "
                     "report this with the file")
    fmt = args.format
    try:
        if fmt == "html":
            text = d.to_html(out)
        elif fmt == "json":
            text = d.to_json(out)
        else:
            text = str(d)
            if out is not None:
                with open(out, "w", encoding="utf-8") as fh:
                    fh.write(text + "\n")
    except OSError as exc:
        return _fail(f"--out {out}: cannot write ({exc.strerror or exc})")
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        print(f"wrote {out}", file=sys.stderr)
    if d.insufficient:
        return _fail(f"{path}: too little to judge: {d.insufficient}")
    fail_on = getattr(args, "fail_on", None)
    if fail_on and d.at_least(fail_on):
        return 1
    return 0
