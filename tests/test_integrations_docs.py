"""The quick starts of docs/integrations.md run as written (and raise no alarm)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).parent.parent / "docs" / "integrations.md"


def _quick_starts() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    part = text[text.index("## Quick starts"):text.index("## The Monitor")]
    blocks = {}
    for m in re.finditer(r"^### (.+?)\n(.*?)```python\n(.*?)```", part, re.S | re.M):
        blocks[m.group(1).replace("`", "").strip()] = m.group(3)
    return blocks


QUICK = _quick_starts()


def test_the_doc_has_the_four_quick_starts():
    assert len(QUICK) == 4, list(QUICK)


@pytest.mark.parametrize("title", sorted(QUICK))
def test_quick_start_runs(title, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend on a shared machine
    ns: dict = {"__name__": "__quickstart__"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(compile(QUICK[title], f"{DOC.name}: {title}", "exec"), ns)
    finally:
        torch.set_num_threads(n)
    mon = ns["mon"] if "mon" in ns else ns["cb"].monitor
    assert mon.alarms == []
    reports = list(tmp_path.rglob("report.html"))
    assert len(reports) == 1 and (reports[0].parent / "report.json").exists()
    assert os.path.getsize(reports[0]) > 1000
