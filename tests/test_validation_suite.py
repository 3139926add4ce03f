"""The labelled validation suite: real training runs with planted causes.

The histories in tests/fixtures/histories were produced by scripts/make_validation_suite.py
(lossdiag.demo.scenarios: NumPy models trained through lossdiag.cross_entropy_grad, statistics from
lossdiag.Metrics).  Each planted cause must be found with the right code and cause, nothing
outside the planted/allowed codes may be reported, and healthy runs raise nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from lossdiag.diagnosis import CODES, diagnose
from lossdiag.history import History

ROOT = Path(__file__).parent.parent
FIX = Path(__file__).parent / "fixtures" / "histories"
FILES = sorted(FIX.glob("*_s*.json"))


def _load(path: Path) -> tuple[History, dict]:
    h = History.load(path)
    return h, h.meta


@pytest.fixture(scope="module")
def results() -> list[dict]:
    out = []
    for p in FILES:
        h, meta = _load(p)
        d = diagnose(h)
        out.append({"file": p.name, "name": meta["scenario"], "expected": meta["expected"],
                    "causes": meta["causes"], "allowed": meta["allowed"],
                    "found": {f.code: f.cause for f in d.findings},
                    "severities": {f.code: f.severity for f in d.findings}})
    return out


def test_suite_is_present_and_small():
    assert len(FILES) >= 40
    names = {json.loads(p.read_text())["meta"]["scenario"] for p in FILES}
    from lossdiag.demo.scenarios import SCENARIOS

    assert names == set(SCENARIOS)
    total = sum(p.stat().st_size for p in FIX.iterdir())
    assert total < 1.5 * 2**20, f"fixtures are {total / 2**20:.2f} MiB"
    # every planted code of the issue is exercised by some scenario
    planted = {c for s in SCENARIOS.values() for c in s.expected}
    assert planted == set(CODES)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_planted_cause_found_and_nothing_else(path):
    h, meta = _load(path)
    d = diagnose(h)
    found = {f.code: f.cause for f in d.findings}
    for code in meta["expected"]:
        assert code in found, f"{path.name}: planted {code} not found\n{d}"
        if code in meta["causes"]:
            assert found[code] == meta["causes"][code], f"{path.name}: wrong cause\n{d}"
    extra = set(found) - set(meta["expected"]) - set(meta["allowed"])
    assert not extra, f"{path.name}: unexpected {extra}\n{d}"
    if not meta["expected"]:
        assert d.findings == [], f"{path.name}: healthy run flagged\n{d}"


def test_findings_carry_evidence_explanation_and_ranked_recommendations(results):
    for p in FILES[::3]:
        h, _ = _load(p)
        for f in diagnose(h).findings:
            assert f.evidence and len(f.explanation) > 80, (p.name, f.code)
            assert f.recommendations and all(r.action for r in f.recommendations)
            assert any(ch.isdigit() for ch in f.explanation), "explanations quote numbers"


def test_precision_and_recall(results):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from make_validation_suite import score
    finally:
        sys.path.pop(0)
    table = score(results)
    for code, row in table.items():
        assert row["tp"] + row["fn"] > 0, f"{code} never planted"
        assert row["precision"] == 1.0, (code, row)
        assert row["recall"] >= 0.9, (code, row)


def test_the_suite_scores_what_it_claims():
    """suite.json (written with the fixtures) agrees with a fresh diagnosis of them."""
    doc = json.loads((FIX / "suite.json").read_text())
    assert len(doc["runs"]) == len(FILES)
    by_name = {(r["name"], r["seed"]): r["found"] for r in doc["runs"]}
    for p in FILES[:10]:
        h, meta = _load(p)
        found = {f.code: f.cause for f in diagnose(h).findings}
        assert found == by_name[(meta["scenario"], meta["seed"])]


# ------------------------------------------------------------------ the trainer itself


def _core_available() -> bool:
    try:
        import lossdiag

        lossdiag.cross_entropy_grad  # noqa: B018
        lossdiag.Metrics  # noqa: B018
        return True
    except (ImportError, AttributeError):
        return False


needs_core = pytest.mark.skipif(not _core_available(), reason="compiled core not built")


@needs_core
def test_run_scenario_uses_the_core_and_is_deterministic(monkeypatch):
    import lossdiag
    from lossdiag.demo.scenarios import run_scenario

    calls = {"grad": 0, "metrics": 0}
    real_grad, real_metrics = lossdiag.cross_entropy_grad, lossdiag.Metrics

    def counting_grad(*a, **k):
        calls["grad"] += 1
        return real_grad(*a, **k)

    class CountingMetrics(real_metrics):
        def compute(self, *a, **k):
            calls["metrics"] += 1
            return super().compute(*a, **k)

    monkeypatch.setattr(lossdiag, "cross_entropy_grad", counting_grad)
    monkeypatch.setattr(lossdiag, "Metrics", CountingMetrics)
    h = run_scenario("healthy-seg", seed=1, quick=True)
    assert calls["grad"] > 0 and calls["metrics"] == len(h)
    assert h.stats[-1]["num_classes"] == 4 and "ece" in h.stats[-1]
    monkeypatch.undo()
    h2 = run_scenario("healthy-seg", seed=1, quick=True)
    np.testing.assert_array_equal(h.train["loss"], h2.train["loss"])
    assert diagnose(h2).at_least("warning") == []


@needs_core
def test_run_scenario_quick_keeps_the_planted_cause_and_reports_progress():
    from lossdiag.demo.scenarios import run_scenario

    seen = []
    h = run_scenario("stuck-lr-low-mlp", seed=0, quick=True,
                     progress=lambda e, n, rec: seen.append((e, n, rec["val_loss"])))
    assert len(seen) == len(h) and seen[-1][1] == len(h)
    assert diagnose(h).get("stuck").cause == "lr-too-low"


def test_run_scenario_rejects_bad_arguments():
    from lossdiag.demo.scenarios import run_scenario

    with pytest.raises(ValueError, match="name must be one of"):
        run_scenario("nope")
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        run_scenario("healthy-mlp", seed=-1)
