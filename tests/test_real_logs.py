"""The diagnosis on real public training logs, labelled by eye before the code ran on them.

* every log is diagnosed and its findings (code and cause) must equal the golden file
  ``tests/fixtures/real_logs/golden.json`` - any change of behaviour on a real run shows here
  (regenerate it deliberately with ``LOSSDIAG_REGEN_GOLDEN=1 pytest tests/test_real_logs.py``
  and review the diff);
* each set meets the targets: micro precision >= 0.90, recall >= 0.85, recall >= 0.75 for every
  code that is expected at least 3 times, and at most 1 healthy run in 10 with a warning.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
from lossdiag.diagnosis import diagnose
from lossdiag.diagnosis.evaluate import score_dir
from lossdiag.history import History

ROOT = Path(__file__).parent / "fixtures" / "real_logs"
SETS = ("dev", "collected")
GOLDEN = ROOT / "golden.json"


def _files() -> list[tuple[str, str, dict]]:
    out = []
    for s in SETS:
        labels = json.loads((ROOT / s / "labels.json").read_text(encoding="utf-8"))
        for name, lab in sorted(labels["files"].items()):
            out.append((s, name, lab))
    return out


FILES = _files()


def _findings(s: str, name: str, lab: dict) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = History.from_path(ROOT / s / name, num_classes=lab.get("num_classes"))
        d = diagnose(h, num_classes=lab.get("num_classes"))
    return sorted(f"{f.code}:{f.cause}:{f.severity}" for f in d.findings)


@pytest.fixture(scope="module")
def golden() -> dict:
    if os.environ.get("LOSSDIAG_REGEN_GOLDEN"):
        doc = {f"{s}/{n}": _findings(s, n, lab) for s, n, lab in FILES}
        GOLDEN.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_every_labelled_file_is_present():
    assert len(FILES) >= 98
    for s, name, _ in FILES:
        assert (ROOT / s / name).is_file(), name
        assert name in (ROOT / s / "README.md").read_text(encoding="utf-8"), name


@pytest.mark.parametrize("s,name,lab", FILES, ids=[f"{s}/{n}" for s, n, _ in FILES])
def test_golden_findings(golden, s, name, lab):
    assert _findings(s, name, lab) == golden[f"{s}/{name}"]


@pytest.mark.parametrize("s", SETS)
def test_targets_on_each_set(s):
    score = score_dir(ROOT / s)
    p, r = score.micro()
    assert p >= 0.90 and r >= 0.85, (s, p, r)
    for code, (tp, _fp, fn) in score.per_code().items():
        if tp + fn >= 3:
            assert tp / (tp + fn) >= 0.75, (s, code, tp, fn)
    n, _, warn = score.healthy_alarms()
    assert warn <= max(1, n // 10), (s, warn, n)
    assert not [f.name for f in score.files if f.error]


def test_every_finding_has_evidence_explanation_and_ranked_fixes():
    for s, name, lab in FILES[::4]:
        h = History.from_path(ROOT / s / name, num_classes=lab.get("num_classes"))
        for f in diagnose(h, num_classes=lab.get("num_classes")).findings:
            assert f.evidence and len(f.explanation) > 80, (name, f.code)
            assert any(ch.isdigit() for ch in f.explanation), (name, f.code)
            assert f.recommendations and all(r.action for r in f.recommendations)
