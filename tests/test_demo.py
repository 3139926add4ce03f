"""`lossdiag demo --quick`: trains the planted scenarios, diagnoses them, writes the report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lossdiag import cli, demo
from lossdiag.demo.scenarios import SCENARIOS

# Run the real command in a fresh interpreter in which anything that `pip install .` does not
# install (torch, scikit-learn, scipy, pandas, tensorboard, IPython) cannot be imported.
_RUNNER = """
import importlib.abc, sys
BLOCKED = {"torch", "sklearn", "scipy", "pandas", "tensorboard", "tensorflow", "IPython",
           "ipywidgets", "hypothesis"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not a dependency of lossdiag")
        return None
sys.meta_path.insert(0, Block())
from lossdiag.cli import main
sys.exit(main(["demo", "--quick", "--out", sys.argv[1]]))
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, str, str, float]:
    out = tmp_path_factory.mktemp("demo") / "out"
    env = dict(os.environ, MPLBACKEND="Agg")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(out)], capture_output=True,
                          text=True, env=env, timeout=300)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.returncode, out, proc.stdout, proc.stderr, seconds


def _sections(page: str) -> dict[str, str]:
    """Report HTML cut into the per-scenario sections (keyed by the h2 id)."""
    parts = re.split(r"<h2 id='([^']+)'>", page)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_demo_writes_a_self_contained_report(demo_run: tuple) -> None:
    rc, out, _, _, seconds = demo_run
    assert rc == 0
    report = out / "report.html"
    assert report.is_file()
    page = report.read_text(encoding="utf-8")
    # self-contained: no external resources or links of any kind
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.I)
    srcs = re.findall(r"""\bsrc\s*=\s*["']([^"']*)""", page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "<script" not in page and "@import" not in page
    assert seconds < 60, f"demo --quick took {seconds:.1f} s"


def test_report_names_each_planted_finding(demo_run: tuple) -> None:
    _, out, _, _, _ = demo_run
    sections = _sections((out / "report.html").read_text(encoding="utf-8"))
    for name, _ in demo.DEMO_SCENARIOS:
        assert name in sections, f"no section for {name}"
        sec = sections[name]
        expected = SCENARIOS[name].expected
        for code in expected:
            # the finding block of the diagnosis (severity, code in <code>, title)
            assert re.search(rf"<h4>(ERROR|WARNING|INFO): <code>{re.escape(code)}</code>",
                             sec), f"{name}: planted finding {code!r} not in the report"
        if not expected:
            assert "No problems found" in sec, f"{name}: healthy run reported a problem"
        # curves, confidence histogram / reliability diagram, explanation, recommendations
        assert len(re.findall(r"<img alt='[^']*' src='data:image/png", sec)) >= 2
        if expected:
            assert "<ol><li><b>" in sec
    assert "landscape" in sections
    land = sections["landscape"]
    assert len(re.findall(r"<img alt='[^']*' src='data:image/png", land)) >= 2
    assert "trajectory" in land


def test_demo_prints_the_table_and_writes_pngs(demo_run: tuple) -> None:
    _, out, stdout, stderr, _ = demo_run
    header = next(line for line in stdout.splitlines() if line.startswith("scenario"))
    assert "findings" in header and "top recommendation" in header
    for name, _ in demo.DEMO_SCENARIOS:
        row = next((line for line in stdout.splitlines() if line.startswith(name + " ")), None)
        assert row is not None, f"{name} missing from the table"
        for code in SCENARIOS[name].expected:
            assert code in row
        assert "MISSED" not in row
    assert "report.html" in stdout
    # progress while training (one line per run when stderr is not a terminal)
    assert all(name in stderr for name, _ in demo.DEMO_SCENARIOS)
    for png in ("landscape_contour.png", "landscape_surface.png",
                "landscape_contour_lines.png", "diverging-mlp_curves.png",
                "diverging-mlp_statistics.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png
    assert (out / "diagnoses.json").is_file()


def test_demo_parser_defaults() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["demo"])
    assert args.out == "lossdiag-demo" and args.quick is False and args.func is demo.run
    args = parser.parse_args(["demo", "--out", "x", "--quick"])
    assert (args.out, args.quick) == ("x", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--seed", "-1"])


def test_logistic_example_descends() -> None:
    surf, line = demo.logistic_example(quick=True, steps=40)
    assert surf.path is not None and surf.path_loss is not None
    assert surf.path.shape == (41, 2)
    assert all(b <= a + 1e-12 for a, b in zip(surf.path_loss, surf.path_loss[1:]))
    assert surf.path_loss[-1] >= surf.minimum()[2] - 1e-9
    assert line.loss[0] > line.loss[-1]
