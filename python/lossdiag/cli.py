"""The `lossdiag` command: `lossdiag {info,diagnose,demo,bench}` (also `python -m lossdiag`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _info(args: argparse.Namespace) -> int:
    import lossdiag

    print(json.dumps(lossdiag.info(), indent=2, default=str))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import benchmark

    return int(benchmark.main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lossdiag",
        description="Fused cross-entropy metrics and a diagnosis of strange loss curves.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sp = sub.add_parser("info", help="version, SIMD level, threads and backends")
    sp.set_defaults(func=_info)
    try:
        from .diagnosis import cli as diag_cli
    except ImportError:  # pragma: no cover - diagnosis layer not present
        diag_cli = None
    if diag_cli is not None:
        diag_cli.add_parser(sub)
    try:
        from . import demo
    except ImportError:  # pragma: no cover - demo not present
        demo = None
    if demo is not None:
        demo.add_parser(sub)
    sp = sub.add_parser("bench", help="time lossdiag against NumPy and PyTorch on this machine "
                        "(--quick: about 30 s; lossdiag bench --help)", add_help=False)
    sp.add_argument("rest", nargs=argparse.REMAINDER)
    sp.set_defaults(func=_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:  # the benchmark parses its own options
        from . import benchmark

        return int(benchmark.main(args_list[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(args_list)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
