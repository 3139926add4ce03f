"""The version of lossdiag: the one place it is written.

pyproject.toml reads it from here (scikit-build-core's regex metadata provider), so the wheel's
metadata and ``lossdiag.__version__`` cannot disagree, and ``import lossdiag`` does not pay for
``importlib.metadata`` (~0.1-0.2 s on a loaded machine) to learn it.
"""

from __future__ import annotations

__version__ = "0.1.0"
