"""The version has one source (python/lossdiag/_version.py) that the package and its metadata share.

`import lossdiag` reads it from there instead of asking importlib.metadata (~0.1-0.2 s).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys

import lossdiag
import pytest
from lossdiag import _version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# PEP 440 public versions plus an optional local part (the canonical regex, in short).
PEP440 = re.compile(
    r"^([1-9][0-9]*!)?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*((a|b|rc)(0|[1-9][0-9]*))?"
    r"(\.post(0|[1-9][0-9]*))?(\.dev(0|[1-9][0-9]*))?(\+[a-z0-9]+(\.[a-z0-9]+)*)?$")


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)


def test_version_is_the_static_one() -> None:
    assert lossdiag.__version__ == _version.__version__
    assert PEP440.match(lossdiag.__version__), lossdiag.__version__
    assert lossdiag.info()["version"] == lossdiag.__version__


def test_pyproject_reads_the_version_from_version_py() -> None:
    """pyproject.toml has no second copy of the number: scikit-build-core reads _version.py."""
    cfg = _pyproject()
    assert "version" not in cfg["project"]
    assert "version" in cfg["project"]["dynamic"]
    meta = cfg["tool"]["scikit-build"]["metadata"]["version"]
    assert meta["provider"] == "scikit_build_core.metadata.regex"
    assert meta["input"] == "python/lossdiag/_version.py"
    # scikit-build-core's default pattern for this provider, applied to the file as it will be
    src = open(os.path.join(ROOT, meta["input"]), encoding="utf-8").read()
    default = r'(?i)^(__version__|VERSION)(?: ?\: ?str)? *= *([\'"])v?(?P<value>.+?)\2'
    pattern = meta.get("regex", default)
    m = re.search(pattern, src, re.MULTILINE)
    assert m is not None and m.group("value") == _version.__version__
    try:  # and scikit-build-core itself, where it is installed
        from scikit_build_core.metadata.regex import dynamic_metadata
    except ImportError:
        return
    settings = {k: v for k, v in meta.items() if k != "provider"}
    settings["input"] = os.path.join(ROOT, settings["input"])
    assert dynamic_metadata("version", settings) == _version.__version__


def test_installed_metadata_agrees() -> None:
    """Where the imported lossdiag is an installed one (CI: pip install .), its metadata agrees."""
    try:
        dist = importlib.metadata.distribution("lossdiag")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("lossdiag is imported from a source tree, not installed")
    init = os.path.realpath(lossdiag.__file__)
    files = {os.path.realpath(str(dist.locate_file(f))) for f in (dist.files or [])}
    if init not in files:
        pytest.skip("the imported lossdiag is not the installed distribution")
    assert dist.version == lossdiag.__version__


def test_import_does_not_load_importlib_metadata() -> None:
    code = "import sys, lossdiag; print('importlib.metadata' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False", r.stdout + r.stderr
