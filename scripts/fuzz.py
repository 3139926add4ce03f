#!/usr/bin/env python
"""Fuzz the lossdiag CPU API: N seeded random calls in subprocess batches.

Every case of tests/test_fuzz.py (`make_case(seed)`): random shapes (0-size, C up to 5000),
layouts, dtypes, label dtypes, strides, read-only and memory-mapped inputs, options, special
values, thread counts, SIMD levels, kernel paths, and one invalid argument in about one call in
six. The cases run in child processes, `--batch` seeds each, so a crash (a signal, an abort, an
interpreter exit) or a hang is caught and counted; the batch then resumes after the seed that
killed it.

    crash    the child died (or hung for --timeout seconds) inside the call
    wrong    a result off the float64 reference, an invalid argument accepted, a valid call refused
    unclear  an invalid argument refused without a TypeError/ValueError naming it

Usage:
    python scripts/fuzz.py                       # 100,000 cases, 2 workers
    python scripts/fuzz.py --cases 5000 --start 10**6 --jobs 1
    python scripts/fuzz.py --simd all            # also rotate LOSSDIAG_SIMD per batch

Prints the counts and the first findings (with their seeds: `--seed S` reruns one case in this
process and prints its description). Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

CHILD = r"""
import json, sys, tempfile, pathlib
sys.path.insert(0, {tests!r})
import numpy as np
np.seterr(all="ignore")
import test_fuzz as F
tmp = pathlib.Path(tempfile.mkdtemp(prefix="ldfuzz"))
for s in range({a}, {b}):
    print("START", s, flush=True)
    case = F.make_case(s, tmp)
    status, detail = F.run_case(case)
    if status != "ok":
        detail = detail + "\n    " + case.describe()
    print("END", s, status, json.dumps(detail[:2000]), flush=True)
    for f in tmp.iterdir():
        try:
            f.unlink()
        except OSError:
            pass
"""


def run_batch(a: int, b: int, env: dict[str, str], timeout: float) -> list[tuple[int, str, str]]:
    """Results (seed, status, detail) of seeds [a, b), resuming after any crash."""
    out: list[tuple[int, str, str]] = []
    while a < b:
        code = CHILD.format(tests=str(TESTS), a=a, b=b)
        with tempfile.TemporaryFile("w+") as err:
            try:
                p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                   stderr=err, text=True, env=env, timeout=timeout)
                stdout, rc = p.stdout, p.returncode
            except subprocess.TimeoutExpired as exc:
                stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else \
                    (exc.stdout or "")
                rc = "timeout"
            err.seek(0)
            tail = err.read()[-1500:]
        started = None
        for line in stdout.splitlines():
            if line.startswith("START "):
                started = int(line.split()[1])
            elif line.startswith("END "):
                _, s, status, detail = line.split(" ", 3)
                out.append((int(s), status, json.loads(detail)))
                started = None
                a = int(s) + 1
        if rc == 0 and started is None and a >= b:
            break
        if started is None:  # died outside a case (import error, ...): report and stop
            out.append((a, "crash", f"child exited with {rc} before seed {a}:\n{tail}"))
            a += 1
            continue
        out.append((started, "crash", f"exit status {rc} (LOSSDIAG_SIMD="
                    f"{env.get('LOSSDIAG_SIMD', 'default')}):\n{tail}"))
        a = started + 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--batch", type=int, default=500, help="seeds per child process")
    ap.add_argument("--jobs", type=int, default=2, help="child processes at a time")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per batch")
    ap.add_argument("--simd", default="", help="'all': rotate LOSSDIAG_SIMD base/avx2/avx512")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the children")
    ap.add_argument("--show", type=int, default=10, help="findings printed per kind")
    ap.add_argument("--seed", type=int, default=None, help="run one seed here and describe it")
    ap.add_argument("--json", default=None, help="write every finding to this file")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(TESTS))
    if args.seed is not None:
        import test_fuzz as F

        case = F.make_case(args.seed, Path(tempfile.mkdtemp()))
        print(case.describe())
        print(*F.run_case(case))
        return 0

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "python"), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = str(args.threads)
    simds = ["base", "avx2", "avx512"] if args.simd == "all" else [args.simd] if args.simd \
        else [""]
    batches = []
    for i, a in enumerate(range(args.start, args.start + args.cases, args.batch)):
        e = dict(env)
        if simds[i % len(simds)]:
            e["LOSSDIAG_SIMD"] = simds[i % len(simds)]
        batches.append((a, min(a + args.batch, args.start + args.cases), e))

    t0 = time.perf_counter()
    counts = {"ok": 0, "crash": 0, "wrong": 0, "unclear": 0}
    findings: dict[str, list[tuple[int, str]]] = {"crash": [], "wrong": [], "unclear": []}
    done = 0
    with ThreadPoolExecutor(max_workers=args.jobs) as ex:
        futs = [ex.submit(run_batch, a, b, e, args.timeout) for a, b, e in batches]
        for f in futs:
            for seed, status, detail in f.result():
                counts[status] = counts.get(status, 0) + 1
                if status != "ok":
                    findings[status].append((seed, detail))
            done += 1
            print(f"\r{done}/{len(batches)} batches, {sum(counts.values())} cases, "
                  f"{counts['crash']} crash / {counts['wrong']} wrong / {counts['unclear']} "
                  f"unclear, {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr,
                  flush=True)
    print(file=sys.stderr)
    total = sum(counts.values())
    print(f"lossdiag fuzz: {total} cases (seeds {args.start}..{args.start + args.cases - 1}) "
          f"in {time.perf_counter() - t0:.0f} s")
    print(f"crash {counts['crash']} / wrong {counts['wrong']} / unclear {counts['unclear']} "
          f"(ok {counts['ok']})")
    for kind in ("crash", "wrong", "unclear"):
        for seed, detail in findings[kind][:args.show]:
            print(f"[{kind}] seed {seed}: {detail}")
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "findings": findings},
                                              indent=1))
    return 1 if counts["crash"] or counts["wrong"] or counts["unclear"] else 0


if __name__ == "__main__":
    sys.exit(main())
