"""Finding the log in a directory and detecting a file's format."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from ._io import HistoryFormatError, PathLike, _read_csv, _read_text
from .core import History

__all__ = ["read_path"]


def _find_log_in_dir(d: Path) -> Path:
    cands = [d / "metrics.csv", d / "trainer_state.json"]
    for c in cands:
        if c.is_file():
            return c
    ckpts = sorted(d.glob("checkpoint-*/trainer_state.json"),
                   key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))
    if ckpts:
        return ckpts[-1]
    lightning = sorted(d.glob("**/metrics.csv"))
    if lightning:
        return lightning[-1]
    if any(d.glob("**/*tfevents*")):
        return d
    logs = sorted([*d.glob("*.csv"), *d.glob("*.json")])
    if len(logs) == 1:
        return logs[0]
    raise HistoryFormatError(d, "no training log found in directory" if not logs else
                             f"several candidate logs {[p.name for p in logs]}",
                             "metrics.csv, trainer_state.json, TensorBoard events or one "
                             "*.csv/*.json log")




def read_path(path: PathLike, *, num_classes: int | None = None,
              mapping: Mapping[str, str] | None = None) -> History:
    """Read any supported log, detecting its format from the name and content."""
    from .keras import _looks_keras

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    if p.is_dir():
        p = _find_log_in_dir(p)
        if p.is_dir():
            return History.from_tensorboard(p, num_classes=num_classes)
    name = p.name.lower()
    if "tfevents" in name:
        return History.from_tensorboard(p, num_classes=num_classes)
    if name.endswith(".json"):
        return History.from_json(p, mapping, num_classes=num_classes)
    if name.endswith((".csv", ".tsv", ".log", ".txt")):
        header, _ = _read_csv(p)
        low = [c.strip().lower() for c in header]
        if mapping is None and "epoch" in low and "step" in low:
            return History.from_lightning_csv(p, num_classes=num_classes)
        if mapping is None and low and low[0] == "epoch" and _looks_keras(header[1:]):
            return History.from_keras_csv(p, num_classes=num_classes)
        return History.from_csv(p, mapping, num_classes=num_classes)
    # unknown extension: sniff the content
    head = _read_text(p)[:2048].lstrip()
    if head.startswith(("{", "[")):
        return History.from_json(p, mapping, num_classes=num_classes)
    if "," in head.split("\n", 1)[0] or "\t" in head.split("\n", 1)[0]:
        return History.from_csv(p, mapping, num_classes=num_classes)
    raise HistoryFormatError(
        p, "unrecognised log format",
        "a Keras CSVLogger/History JSON, Lightning metrics.csv, HF trainer_state.json, "
        "TensorBoard events file, plain CSV/JSON, or a lossdiag history JSON")
