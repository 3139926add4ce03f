"""PyTorch Lightning ``CSVLogger`` ``metrics.csv`` (interleaved step / epoch rows with gaps)."""

from __future__ import annotations

from ._columns import _from_interleaved, _ordered_rows
from ._io import HistoryFormatError, PathLike, _csv_columns, _ffill, _read_csv
from .core import History

__all__ = ["read_lightning_csv"]


def read_lightning_csv(path: PathLike, *, num_classes: int | None = None) -> History:
    """Columns logged once per epoch (``val_loss``, ``train_loss_epoch``) become per-epoch
    metrics; columns logged several times per epoch (``train_loss_step``) become per-step
    metrics and their per-epoch mean fills the epoch record when no ``_epoch`` column exists."""
    header, rows = _read_csv(path)
    low = [c.strip().lower() for c in header]
    if "epoch" not in low or "step" not in low:
        raise HistoryFormatError(path, f"columns {header}",
                                 "a Lightning metrics.csv with 'epoch' and 'step' columns")
    cols, notes = _csv_columns(path, header, rows)
    epoch_key = header[low.index("epoch")]
    step_key = header[low.index("step")]
    if epoch_key not in cols or step_key not in cols:
        raise HistoryFormatError(path, "the epoch or step column holds text",
                                 "numeric 'epoch' and 'step' columns")
    epoch_raw, ep_present = cols.pop(epoch_key)
    step_raw, st_present = cols.pop(step_key)
    if not ep_present.any():
        raise HistoryFormatError(path, "the epoch column is empty", "epoch numbers")
    if not ep_present.all():
        # rows without an epoch (e.g. logged before training) take the previous epoch
        epoch_raw = _ffill(epoch_raw, ep_present)
    keep, note = _ordered_rows(str(path), epoch_raw, "epoch", allow_repeats=True)
    if keep:
        epoch_raw, step_raw, st_present = epoch_raw[keep:], step_raw[keep:], st_present[keep:]
        cols = {k: (v[keep:], p[keep:]) for k, (v, p) in cols.items()}
        notes.append(note)
    h = _from_interleaved(cols, epoch_raw, step_raw, st_present, str(path),
                          num_classes=num_classes, fmt="lightning-csv")
    h.meta.setdefault("notes", []).extend(notes)
    return h
