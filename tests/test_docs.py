"""The documentation runs as written.

* Every ```python block of README.md and docs/*.md is executed: each file's blocks in order, in
  one namespace, in a temporary working directory (so files the examples write land there). The
  directory holds a link ``tests`` to the repository's tests/ folder, so paths such as
  ``tests/fixtures/real_logs/...`` work as they do from the root of a clone.
* A statement whose line ends in ``# prints: TEXT`` must print TEXT (``...`` matches anything).
* A block may opt out only with a visible reason on the line before its fence:
  ``<!-- skip: needs a CUDA device -->``; each file's test reports what it skipped and why.
* Every ``lossdiag ...`` line in the README's shell blocks runs with exit status 0, or with the
  status its trailing comment documents (``# exit status 1: ...``).
* Relative links and images in README.md, docs/*.md and bench/README.md point at files (and
  headings) that exist, and none of those pages speaks of work sessions, issue numbers or commit
  hashes.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINKED_FILES = [*DOC_FILES, ROOT / "bench" / "README.md"]

PYTHON_LANGS = {"python", "py", "python3"}
SHELL_LANGS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
SKIP = re.compile(r"^\s*<!--\s*skip:(?P<reason>.*?)-->\s*$")
PRINTS = re.compile(r"#\s*prints:\s*(?P<text>.*?)\s*$")


class SkippedDocBlocks(UserWarning):
    """Raised (as a warning) for doc blocks that opted out of execution, with their reasons."""


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    lang: str
    code: str
    skip: str | None  # the reason, when the block opted out

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, with their language and opt-out reason."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        lang = (m["info"].strip().split() or [""])[0].lower()
        prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        sk = SKIP.match(prev)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                      and lines[j].strip().strip(fence[0]) == ""):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path.relative_to(ROOT)}:{i + 1}: unclosed code fence")
        blocks.append(Block(path, i + 2, lang, "\n".join(body) + "\n",
                            sk["reason"].strip() if sk else None))
        i = j + 1
    return blocks


def _match(expected: str, got: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, got.strip(), flags=re.DOTALL) is not None


def run_block(block: Block, namespace: dict) -> None:
    """Execute one block statement by statement, checking the ``# prints:`` comments.

    The code is padded with blank lines so that tracebacks and messages give the markdown
    file's own line numbers."""
    name = str(block.path.relative_to(ROOT))
    padded = "\n" * (block.line - 1) + block.code
    src = padded.splitlines()
    for stmt in ast.parse(padded, filename=name).body:
        code = compile(ast.Module(body=[stmt], type_ignores=[]), name, "exec")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
        text = out.getvalue()
        sys.stdout.write(text)
        m = PRINTS.search(src[(stmt.end_lineno or stmt.lineno) - 1])
        if m:
            assert _match(m["text"], text), (
                f"{name}:{stmt.end_lineno}: expected to print {m['text']!r}, "
                f"printed {text.strip()!r}")


@pytest.fixture
def doc_dir(tmp_path, monkeypatch):
    """A scratch working directory in which tests/ resolves as from the repository root; the
    thread count and open figures are restored afterwards, so examples leave no state behind."""
    import lossdiag
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (tmp_path / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    threads = lossdiag.get_num_threads()
    yield tmp_path
    lossdiag.set_num_threads(threads)
    plt.close("all")


FILES_WITH_PYTHON = [p for p in DOC_FILES if any(b.lang in PYTHON_LANGS for b in code_blocks(p))]


@pytest.mark.parametrize("path", FILES_WITH_PYTHON, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path: Path, doc_dir: Path) -> None:
    blocks = [b for b in code_blocks(path) if b.lang in PYTHON_LANGS]
    skipped = [b for b in blocks if b.skip is not None]
    for b in skipped:
        assert b.skip, f"{b.where}: a skipped block must say why (<!-- skip: REASON -->)"
    namespace: dict = {"__name__": "__main__"}
    for b in blocks:
        if b.skip is None:
            run_block(b, namespace)
    ran = len(blocks) - len(skipped)
    print(f"\n{path.relative_to(ROOT)}: {ran} block(s) run, {len(skipped)} skipped")
    if skipped:
        warnings.warn(
            f"{path.relative_to(ROOT)}: {len(skipped)} of {len(blocks)} python block(s) not run: "
            + "; ".join(f"line {b.line}: {b.skip}" for b in skipped), SkippedDocBlocks,
            stacklevel=1)


def test_blocks_are_found() -> None:
    """The parser sees the README's quick start (a guard against a silently empty test)."""
    blocks = code_blocks(README)
    assert sum(b.lang in PYTHON_LANGS and b.skip is None for b in blocks) >= 2
    assert any("lossdiag diagnose" in b.code for b in blocks if b.lang in SHELL_LANGS)


def readme_commands() -> list[tuple[str, list[str], int]]:
    """(where, argv after 'lossdiag', expected exit status) for the README's lossdiag lines."""
    cmds = []
    for b in code_blocks(README):
        if b.lang not in SHELL_LANGS or b.skip is not None:
            continue
        for k, line in enumerate(b.code.splitlines()):
            line = line.strip().removeprefix("$ ")
            words = shlex.split(line, comments=True)
            if words[:1] == ["lossdiag"]:
                args = words[1:]
            elif words[:3] == ["python", "-m", "lossdiag"]:
                args = words[3:]
            else:
                continue
            status = re.search(r"#\s*exit status (\d+)", line)
            cmds.append((f"README.md:{b.line + k}", args, int(status[1]) if status else 0))
    return cmds


@pytest.mark.parametrize("where,args,status", readme_commands(),
                         ids=[c[0] for c in readme_commands()])
def test_readme_commands_run(where: str, args: list[str], status: int, doc_dir: Path) -> None:
    import lossdiag

    # the subprocess imports the lossdiag under test (installed, or a source tree on the path)
    home = str(Path(lossdiag.__file__).resolve().parent.parent)
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [home, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "lossdiag", *args], cwd=doc_dir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == status, (
        f"{where}: lossdiag {shlex.join(args)} exited with {proc.returncode}, documented "
        f"{status}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


# ---------------------------------------------------------------------------------------------
# links and wording

LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    text = "".join(ch for ch in text if ch in " -" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_slug(m[1]) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.MULTILINE)}


def _prose(path: Path) -> str:
    """The page without its code blocks (links inside code are not links)."""
    return re.sub(r"^\s*(```|~~~).*?^\s*\1", "", path.read_text(encoding="utf-8"),
                  flags=re.DOTALL | re.MULTILINE)


@pytest.mark.parametrize("path", LINKED_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    bad = []
    for m in LINK.finditer(_prose(path)):
        target = m["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, data:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor}")
    assert not bad, f"{path.relative_to(ROOT)}: " + "; ".join(bad)


ORDINALS = (r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|"
            r"twelfth|thirteenth|fourteenth|fifteenth|\d+(?:st|nd|rd|th))")
WORK_LOG = [
    (re.compile(rf"\b{ORDINALS}[\s-]+session\b", re.IGNORECASE), "a work session"),
    (re.compile(r"\bsession\s+\d+\b", re.IGNORECASE), "a work session"),
    (re.compile(r"\b(?:issue|PR|pull request)\s*#?\d+\b", re.IGNORECASE), "an issue number"),
    (re.compile(r"(?<![\w/.-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![\w-])"),
     "a commit hash"),
]


@pytest.mark.parametrize("path", LINKED_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_work_log_in_user_docs(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = [f"{what}: {m[0]!r} (line {text.count(chr(10), 0, m.start()) + 1})"
             for rx, what in WORK_LOG for m in rx.finditer(text)]
    assert not found, f"{path.relative_to(ROOT)} reads like a work log: " + "; ".join(found)
