"""Smoke test of the CPU benchmark harness on toy shapes (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ld = pytest.importorskip("lossdiag")
bench = pytest.importorskip("lossdiag.benchmark")

TINY = ["--quick", "--tiny", "--repeats", "1"]


def test_bench_runs_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """All cases/functions run, every result passes its NumPy check, JSON and tables are written."""
    threads_before = ld.get_num_threads()
    out = tmp_path / "bench.json"
    assert bench.main([*TINY, "--threads", "1", "--json", str(out)], developer=True) == 0
    assert ld.get_num_threads() == threads_before  # restored

    data = json.loads(out.read_text())
    rows = data["results"]
    assert {r["case"] for r in rows} == {"nchw", "nhwc", "cls", "head", "vocab"}
    for case in ("nchw", "nhwc", "cls", "head", "vocab"):
        funcs = {(r["function"], r["impl"]) for r in rows if r["case"] == case}
        for f in ("cross_entropy", "accuracy", "cross_entropy_grad", "evaluate"):
            assert (f, "numpy") in funcs and (f, "lossdiag") in funcs
        assert ("cross_entropy_grad", "lossdiag out=logits") in funcs
        assert any(f == "read limit" for f, _ in funcs)
        assert any(f == "copy limit" for f, _ in funcs)
    for r in rows:
        assert r["median_ms"] > 0 and np.isfinite(r["gbps"])
    assert len([t for t in data["targets"] if t["official"]]) == 6
    for case in ("nchw", "nhwc", "cls", "head", "vocab"):  # behind the self-relative targets
        pt = data["paired"][case]
        assert set(pt) == {"read limit", "cross_entropy", "evaluate"}
        assert len({len(v) for v in pt.values()}) == 1 and all(min(v) > 0 for v in pt.values())
    paired_targets = [t for t in data["targets"] if t["text"].endswith(", paired")]
    assert len(paired_targets) == 10 and all(t["value"] > 0 for t in paired_targets)
    assert data["notes"] == {case: [] for case in ("nchw", "nhwc", "cls", "head", "vocab")}
    assert data["machine"]["threads"] == 1

    text = capsys.readouterr().out
    assert "cross_entropy_grad" in text and ("PASS" in text or "MISS" in text)


def test_bench_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    """--markdown prints a GitHub table."""
    assert bench.main([*TINY, "--cases", "cls", "--no-torch", "--markdown"], developer=True) == 0
    text = capsys.readouterr().out
    assert "| case | function | impl |" in text
    assert "| cls | evaluate | lossdiag |" in text


def test_user_bench_ends_with_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """`lossdiag bench` ends with what was measured, the speed-ups and the machine; no targets."""
    from lossdiag import cli

    assert cli.main(["bench", *TINY, "--cases", "nchw,cls", "--no-torch"]) == 0
    cap = capsys.readouterr()
    out = cap.out
    assert "PASS" not in out and "MISS" not in out and "target" not in out.lower()
    assert "segmentation, channels first" in out and "classification" in out
    assert "channels last" not in out
    for f in ("cross_entropy", "accuracy", "cross_entropy_grad", "evaluate"):
        assert f in out
    last = out.strip().splitlines()
    summary = next(i for i, line in enumerate(last) if line.startswith("Summary:"))
    assert "over NumPy" in last[summary]
    assert last[summary + 1].startswith("Machine:") and "threads" in last[summary + 1]
    assert "checked against NumPy" in last[summary + 2]
    assert "bench/" not in out + cap.err  # the user has no bench/ folder
    assert "[nchw] cross_entropy" not in cap.err  # one progress line per case, not per timing


def test_new_cases_have_their_read_limit(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """--cases head,vocab: each case is timed against NumPy and its own read limit; the presets
    hold the shapes the performance issue asks for."""
    out = tmp_path / "bench.json"
    assert bench.main([*TINY, "--cases", "vocab,head", "--no-torch", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    for case in ("head", "vocab"):
        funcs = {(r["function"], r["impl"]) for r in rows if r["case"] == case}
        assert any(f == "read limit" for f, _ in funcs)
        assert ("evaluate", "numpy") in funcs and ("evaluate", "lossdiag") in funcs
        limit = [r for r in rows if r["case"] == case and r["function"] == "cross_entropy"]
        assert all(r["frac_limit"] > 0 for r in limit)
    text = capsys.readouterr().out
    assert text.index("classification head") < text.index("language-model vocabulary")
    assert bench.cases.PRESETS["full"]["vocab"] == (1024, 32000)
    assert bench.cases.PRESETS["full"]["head"] == bench.cases.PRESETS["quick"]["head"] \
        == (1024, 1000)
    assert bench.cases.PRESETS["full"]["seg"] == (8, 21, 512, 512)  # nhwc: (8, 512, 512, 21)


def test_vocabulary_case_times_evaluate_without_a_confusion_matrix(tmp_path: Path) -> None:
    """Above 1024 classes evaluate returns per-class counts, no (C, C) matrix, and the NumPy and
    torch baselines do the same, so the vocabulary case is timed like the others."""
    out = tmp_path / "bench.json"
    assert bench.main([*TINY, "--cases", "vocab", "--json", str(out)], developer=True) == 0
    data = json.loads(out.read_text())
    impls = {r["impl"] for r in data["results"] if r["case"] == "vocab"
             and r["function"] == "evaluate"}
    assert {"lossdiag", "numpy", "torch"} <= impls
    assert data["paired"]["vocab"].keys() == {"read limit", "cross_entropy", "evaluate"}

def test_user_bench_help_is_self_contained(capsys: pytest.CaptureFixture[str]) -> None:
    from lossdiag import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "NumPy" in text and "--quick" in text
    assert "bench/" not in text and "--strict" not in text
    assert "bench/" not in cli.build_parser().format_help()


def test_strict_is_for_the_developer_bench() -> None:
    with pytest.raises(SystemExit):
        bench.main([*TINY, "--strict"])


def _scaled_loss(real: Any) -> Any:
    return lambda *a, **k: real(*a, **k) * 1.01


def _scaled_grad(real: Any) -> Any:
    def f(*a: Any, **k: Any) -> Any:
        loss, grad = real(*a, **k)
        return loss, grad * 1.01

    return f


@pytest.mark.parametrize(("name", "wrap"), [("cross_entropy", _scaled_loss),
                                            ("cross_entropy_grad", _scaled_grad)])
def test_wrong_kernel_is_caught(monkeypatch: pytest.MonkeyPatch, name: str, wrap: Any) -> None:
    """A kernel whose result is off by 1 % makes the benchmark fail (exit status 2)."""
    monkeypatch.setattr(ld, name, wrap(getattr(ld, name)))
    assert bench.main([*TINY, "--cases", "cls", "--no-torch"]) == 2


def test_wrong_confidence_sums_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate's reliability sums are checked too: doubling them fails the run (exit status 2)."""
    real = bench.runner.stats_to_eval

    def doubled(stats: Any) -> Any:
        r = real(stats)
        r.conf_sum = np.asarray(r.conf_sum) * 2.0
        return r

    monkeypatch.setattr(bench.runner, "stats_to_eval", doubled)
    assert bench.main([*TINY, "--cases", "cls", "--no-torch"]) == 2


def test_numpy_reference_matches_float64() -> None:
    """The NumPy baseline itself is right (float64 brute force on a small NCHW batch)."""
    rng = np.random.default_rng(1)
    x, t = bench.cases.make_segmentation(rng, (2, 4, 5, 6))
    x64 = x.astype(np.float64)
    p = np.exp(x64) / np.exp(x64).sum(1, keepdims=True)
    valid = t != 255
    n, _, h, w = x.shape
    ii, jj, kk = np.nonzero(valid)
    ptrue = p[ii, t[valid].astype(int), jj, kk]
    want = -np.log(ptrue).mean()
    assert bench.reference.np_cross_entropy(x, t, 1, 255) == pytest.approx(want, rel=1e-5)
    loss, grad = bench.reference.np_cross_entropy_grad(x, t, 1, 255)
    assert loss == pytest.approx(want, rel=1e-5)
    g = p * valid[:, None]
    g[ii, t[valid].astype(int), jj, kk] -= 1.0
    np.testing.assert_allclose(grad, g / valid.sum(), atol=1e-7)
    ev = bench.reference.np_evaluate(x, t, 1, 255, 10)
    assert ev.count == valid.sum() and ev.confusion.sum() == valid.sum()
    assert ev.conf_hist.sum() == ev.true_prob_hist.sum() == ev.margin_hist.sum() == valid.sum()
    conf = p.max(1)[valid]
    right = p.argmax(1)[valid] == t[valid]
    edges = np.linspace(0.0, 1.0, 11)
    np.testing.assert_array_equal(ev.conf_correct, np.histogram(conf[right], edges)[0])
    np.testing.assert_allclose(ev.conf_sum, np.histogram(conf, edges, weights=conf)[0], rtol=1e-5)


class _Clock:
    """A fake ``time`` module for the bench harness: ``perf_counter`` only moves when a fake call
    says so, so the timing loops below are deterministic however loaded the machine is."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(bench.timing, "time", c)
    return c


class _Calls:
    """A callable that counts its calls; each one takes ``dt`` seconds of the fake clock."""

    def __init__(self, clock: _Clock | None = None, dt: float = 0.0) -> None:
        self.n = 0
        self.dt = dt
        self.clock = clock

    def __call__(self) -> int:
        self.n += 1
        if self.clock is not None:
            self.clock.now += self.dt
        return self.n


def test_measure_counts_without_minimum_times(clock: _Clock) -> None:
    """Without minimum times: exactly `warmup` untimed and `repeats` timed calls."""
    f = _Calls(clock, MS2)
    times, first = bench.timing.measure(f, repeats=5, warmup=2)
    assert len(times) == 5 and f.n == 7 and first == 1
    assert times == pytest.approx([MS2 * 1e3] * 5)  # ms of the fake clock


# Call durations are binary fractions of a second, so the fake clock's sums are exact.
MS2 = 2.0**-9  # ~1.95 ms


def test_measure_minimum_times(clock: _Clock) -> None:
    """Warm-up and timed calls continue until their minimum times are reached."""
    f = _Calls(clock, MS2)
    times, _ = bench.timing.measure(f, repeats=2, warmup=1, min_warmup_s=0.02, min_time_s=0.03)
    # 20 ms of 1.95 ms calls: 11 warm-up calls; then timed calls until 30 ms: 16.
    assert f.n - len(times) == 11
    assert len(times) == 16 and sum(times) >= 30.0


def test_measure_call_cap(clock: _Clock) -> None:
    """A fast function with a long minimum time stops at MAX_CALLS_PER_REPEAT * repeats."""
    f = _Calls(clock, 1e-6)
    times, _ = bench.timing.measure(f, repeats=3, warmup=0, min_time_s=60.0)
    assert len(times) == bench.timing.MAX_CALLS_PER_REPEAT * 3


def test_measure_paired_rounds_and_warmup(clock: _Clock) -> None:
    """Paired timing: `rounds` timed calls of each function after a timed warm-up."""
    a, b = _Calls(clock, MS2), _Calls(clock, 2 * MS2)
    t = bench.timing.measure_paired({"a": a, "b": b}, rounds=4, warmup=1, min_warmup_s=0.02)
    assert [len(v) for v in t.values()] == [4, 4]
    # Warm-up rounds take 5.86 ms each: 4 of them reach 20 ms; then 4 timed rounds.
    assert a.n == b.n == 4 + 4
    assert t["a"] == pytest.approx([MS2 * 1e3] * 4) and t["b"] == pytest.approx([2e3 * MS2] * 4)


def test_measure_paired_alternates_order(clock: _Clock) -> None:
    """The order of the calls is reversed every other round."""
    order: list[str] = []

    def f(name: str) -> Any:
        def g() -> None:
            order.append(name)
            clock.now += MS2
        return g

    bench.timing.measure_paired({"a": f("a"), "b": f("b")}, rounds=2, warmup=1)
    assert order == ["a", "b", "b", "a", "a", "b"]


def test_bench_overhead_smoke(tmp_path: Path) -> None:
    """bench/bench_overhead.py runs (one round, one call per sample) and checks its results."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_overhead.py"
    spec = importlib.util.spec_from_file_location("bench_overhead", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    threads = ld.get_num_threads()
    out = tmp_path / "overhead.json"
    assert mod.main(["--shapes", "2x3", "--rounds", "1", "--sample-ms", "0", "--threads", "1",
                     "--clock", "thread", "--json", str(out)]) == 0
    assert ld.get_num_threads() == threads  # restored
    rows = json.loads(out.read_text())["results"]
    funcs = {r["function"] for r in rows}
    assert {"cross_entropy", "evaluate", "Metrics.update", "binary_accuracy"} <= funcs
    ce = next(r for r in rows if r["function"] == "cross_entropy")
    assert set(ce["median_us"]) >= {"lossdiag", "kernel"} and ce["median_us"]["kernel"] > 0
    with pytest.raises(SystemExit):  # the thread clock does not see other threads' work
        mod.main(["--threads", "2", "--clock", "thread"])
