"""The examples in the public docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest


def _walk(pkg: str) -> list[str]:
    p = importlib.import_module(pkg)
    return [pkg] + [f"{pkg}.{m.name}" for m in pkgutil.iter_modules(p.__path__)]


MODULES = (["lossdiag"] + _walk("lossdiag.core") + _walk("lossdiag.history")
           + _walk("lossdiag.diagnosis") + _walk("lossdiag.landscape") + _walk("lossdiag.demo")
           + _walk("lossdiag.benchmark"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    if name in ("lossdiag", "lossdiag.core.api", "lossdiag.core.metrics", "lossdiag.core.results") \
            or "." not in name[9:]:
        assert res.attempted > 0, f"{name} has no examples"
    assert res.failed == 0
