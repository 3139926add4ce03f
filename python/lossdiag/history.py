"""Training histories: per-epoch (and optionally per-step) records of metrics.

A :class:`History` holds what a training run logged: train and validation metrics (loss,
accuracy, IoU, ...), the learning rate where known, and optionally the per-epoch statistics
returned by ``lossdiag.Metrics(...).compute()``.  It is the input of ``lossdiag.diagnose``.

Build one in a training loop:

>>> from lossdiag.history import History
>>> h = History(num_classes=10)
>>> for epoch, (tl, vl) in enumerate([(2.1, 2.0), (1.5, 1.6), (1.2, 1.4)]):
...     h.log(epoch, train={"loss": tl}, val={"loss": vl, "accuracy": 0.3 + 0.1 * epoch}, lr=1e-3)
>>> len(h), h.val["loss"].tolist()
(3, [2.0, 1.6, 1.4])

or read one from a file written by Keras (``History`` object / ``CSVLogger``), PyTorch
Lightning (``CSVLogger`` ``metrics.csv``), Hugging Face (``trainer_state.json``), TensorBoard
event files (with the optional ``tensorboard`` package), a plain CSV/JSON file, or lossdiag's
own JSON format:
``History.from_path(path)`` detects the format.

Column names are normalised to ``train/<metric>`` and ``val/<metric>``: prefixes ``val_``,
``valid_``, ``validation_``, ``eval_``, ``val/`` ... mark validation metrics, ``train_``,
``training_``, ``train/`` (or no prefix) mark training metrics, ``acc`` becomes ``accuracy`` and
``lr``/``learning_rate``/``lr-Adam`` become the learning rate.  A *missing* value (an empty cell,
a metric not logged that epoch) is kept apart from a *logged* NaN or inf: only the latter is a
non-finite metric.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = [
    "History",
    "HistoryFormatError",
    "metric_direction",
    "normalize_metric_name",
    "split_metric_key",
]

PathLike = Union[str, "os.PathLike[str]"]

FORMAT_NAME = "lossdiag.history"
FORMAT_VERSION = 1


class HistoryFormatError(ValueError):
    """A training log could not be read: the message names the file and what was expected."""

    def __init__(self, path: Any, problem: str, expected: str | None = None) -> None:
        msg = f"{path}: {problem}"
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)
        self.path = path
        self.problem = problem
        self.expected = expected


# --------------------------------------------------------------------------------------------
# metric names
# --------------------------------------------------------------------------------------------

_VAL_PREFIXES = ("validation_", "validation/", "valid_", "valid/", "val_", "val/", "val-",
                 "eval_", "eval/", "test_", "test/")
_TRAIN_PREFIXES = ("training_", "training/", "train_", "train/", "train-", "trn_")
_VAL_SUFFIXES = ("_val", "/val", "_valid", "/valid", "_validation", "/validation", "_eval")
_TRAIN_SUFFIXES = ("_train", "/train", "_training", "/training")
_ALIASES = {
    "acc": "accuracy",
    "categorical_accuracy": "accuracy",
    "sparse_categorical_accuracy": "accuracy",
    "binary_accuracy": "accuracy",
    "miou": "mean_iou",
    "mean_io_u": "mean_iou",
    "jaccard": "iou",
}
_LR_RE = re.compile(r"^(lr|learning_rate|learning-rate|learningrate)([-_/].*)?$", re.IGNORECASE)

# Higher-is-better metrics ("scores") and lower-is-better ones ("losses"), recognised by name.
_SCORE_WORDS = ("accuracy", "acc", "iou", "miou", "jaccard", "dice", "f1", "fscore", "f_score",
                "fbeta", "auc", "auroc", "roc_auc", "auprc", "average_precision", "map",
                "precision", "recall", "sensitivity", "specificity", "kappa", "mcc", "r2",
                "top1", "top5", "top_1", "top_5", "bleu", "rouge", "correct")
_LOSS_WORDS = ("loss", "nll", "ce", "cross_entropy", "crossentropy", "xent", "bce", "mse",
               "mae", "rmse", "l1", "l2", "error", "err", "perplexity", "ppl", "wer", "cer",
               "hinge", "kld", "kl", "huber", "ece", "mce", "brier", "entropy")
# Names whose values are bookkeeping, not a metric to diagnose.
_IGNORED_WORDS = ("runtime", "samples_per_second", "steps_per_second", "total_flos", "flos",
                  "epoch", "step", "global_step", "time", "timestamp", "walltime",
                  "grad_norm", "batch", "iteration", "iter", "memory", "throughput")


def normalize_metric_name(name: str) -> str:
    """Return the canonical name of a metric without its split: ``'acc'`` -> ``'accuracy'``.

    >>> normalize_metric_name("Acc")
    'accuracy'
    >>> normalize_metric_name("mIoU")
    'mean_iou'
    """
    n = name.strip().lower().replace(" ", "_")
    return _ALIASES.get(n, n)


def split_metric_key(name: str, *, default_split: str = "train") -> tuple[str, str]:
    """Split a logged column name into ``(split, metric)`` with ``split`` in train/val/lr/other.

    >>> split_metric_key("val_acc")
    ('val', 'accuracy')
    >>> split_metric_key("train/loss_epoch")
    ('train', 'loss_epoch')
    >>> split_metric_key("lr-Adam")
    ('lr', 'lr')
    >>> split_metric_key("eval_runtime")
    ('other', 'runtime')
    """
    raw = name.strip()
    if _LR_RE.match(raw):
        return "lr", "lr"
    low = raw.lower()
    split = default_split
    for p in _VAL_PREFIXES:
        if low.startswith(p):
            split, low = "val", low[len(p):]
            break
    else:
        for p in _TRAIN_PREFIXES:
            if low.startswith(p):
                split, low = "train", low[len(p):]
                break
        else:
            for s in _VAL_SUFFIXES:
                if low.endswith(s):
                    split, low = "val", low[: -len(s)]
                    break
            else:
                for s in _TRAIN_SUFFIXES:
                    if low.endswith(s):
                        split, low = "train", low[: -len(s)]
                        break
    suffix = ""
    for suf in ("_epoch", "_step"):
        if low.endswith(suf) and len(low) > len(suf):
            low, suffix = low[: -len(suf)], suf
            break
    base = normalize_metric_name(low)
    metric = base + suffix
    if _LR_RE.match(base):
        return "lr", "lr"
    if any(base == w or base.endswith("_" + w) for w in _IGNORED_WORDS):
        return "other", metric
    return split, metric


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def metric_direction(name: str) -> str | None:
    """``'min'`` for loss-like metrics, ``'max'`` for accuracy-like ones, ``None`` if unknown.

    Accuracy, IoU/mIoU, Dice, F1, AUC, precision, recall, kappa ... are higher-is-better;
    loss, NLL, MSE, error, perplexity ... are lower-is-better.

    >>> metric_direction("val_mIoU"), metric_direction("dice_coef"), metric_direction("nll")
    ('max', 'max', 'min')
    >>> metric_direction("grad_norm") is None
    True
    """
    n = normalize_metric_name(name)
    words = _words(n)
    if not words:
        return None
    if n in ("mean_iou", "mean_dice", "balanced_accuracy", "top_k_accuracy"):
        return "max"
    if any(w in _LOSS_WORDS for w in words) or n.endswith("loss"):
        if "accuracy" not in words and "acc" not in words:
            return "min"
    if any(w in _SCORE_WORDS for w in words) or any(
        w.startswith(("acc", "iou", "miou", "dice", "f1", "auc", "top")) for w in words
    ):
        return "max"
    return None


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


class _Table:
    """Rows keyed by an x value (epoch or step); columns hold floats, ``None`` when missing."""

    __slots__ = ("xname", "x", "cols", "_cache")

    def __init__(self, xname: str) -> None:
        self.xname = xname
        self.x: list[float] = []
        self.cols: dict[str, list[float | None]] = {}
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.x)

    def add_row(self, x: float, values: Mapping[str, float | None], *, merge: bool) -> int:
        """Append a row (or merge into the last one when it has the same x and ``merge``)."""
        self._cache = None
        if merge and self.x and self.x[-1] == x:
            i = len(self.x) - 1
        else:
            self.x.append(x)
            for col in self.cols.values():
                col.append(None)
            i = len(self.x) - 1
        for k, v in values.items():
            col = self.cols.get(k)
            if col is None:
                col = self.cols[k] = [None] * len(self.x)
            if v is not None:
                col[i] = v
        return i

    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{key: (values float64 with NaN where missing, present bool mask)}`` (cached)."""
        if self._cache is None:
            out = {}
            for k, col in self.cols.items():
                present = np.fromiter((v is not None for v in col), dtype=bool, count=len(col))
                vals = np.array(col, dtype=np.float64)  # None -> nan
                out[k] = (vals, present)
            self._cache = out
        return self._cache

    def xs(self) -> np.ndarray:
        return np.asarray(self.x, dtype=np.float64)

    @classmethod
    def from_arrays(cls, xname: str, x: Sequence[float] | np.ndarray,
                    cols: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> _Table:
        t = cls(xname)
        xa = np.asarray(x, dtype=np.float64)
        t.x = xa.tolist()
        cache = {}
        for k, (vals, present) in cols.items():
            v = np.asarray(vals, dtype=np.float64)
            p = np.asarray(present, dtype=bool)
            if v.shape != xa.shape or p.shape != xa.shape:
                raise ValueError(f"column {k!r} has {v.shape[0]} values for {xa.shape[0]} rows")
            lst: list[float | None] = v.tolist()
            if not p.all():
                for i in np.flatnonzero(~p).tolist():
                    lst[i] = None
            t.cols[k] = lst
            cache[k] = (np.where(p, v, np.nan), p)
        t._cache = cache
        return t


def _to_float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a number, got {value!r}")
    if isinstance(value, str):
        s = value.strip()
        if s == "":
            return None
        try:
            return float(s)
        except ValueError:
            raise TypeError(f"{what} must be a number, got {value!r}") from None
    try:
        arr = np.asarray(value)
        if arr.size != 1:
            raise TypeError(f"{what} must be a scalar, got an array of shape {arr.shape}")
        return float(arr.reshape(()))
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number, got {value!r}") from None


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------


class History:
    """Per-epoch (and optionally per-step) records of a training run.

    Parameters
    ----------
    num_classes:
        Number of classes when known (enables the chance-level checks of ``diagnose``).
    source:
        Where the history came from (a path or a description), shown in reports.
    meta:
        Free-form JSON-serialisable information (batch size, optimizer, scenario, ...).

    Metrics are stored under keys ``"train/<name>"`` and ``"val/<name>"``; ``train`` / ``val``
    give ``{name: per-epoch array}`` with NaN where a value is missing.

    >>> h = History()
    >>> h.log(0, train={"loss": 1.0, "acc": 0.5}, val={"loss": 1.1})
    >>> h.log(1, train={"loss": 0.8, "acc": 0.6})      # no validation this epoch
    >>> h.train["accuracy"].tolist(), h.val["loss"].tolist()
    ([0.5, 0.6], [1.1, nan])
    """

    def __init__(self, *, num_classes: int | None = None, source: str | None = None,
                 meta: Mapping[str, Any] | None = None) -> None:
        if num_classes is not None:
            if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
                raise TypeError(f"num_classes must be an int, got {num_classes!r}")
            if num_classes < 2:
                raise ValueError(f"num_classes must be >= 2, got {num_classes}")
            num_classes = int(num_classes)
        self.num_classes: int | None = num_classes
        self.source: str | None = None if source is None else str(source)
        self.meta: dict[str, Any] = dict(meta or {})
        self._epochs = _Table("epoch")
        self._steps = _Table("step")
        self._stats: dict[int, dict[str, Any]] = {}
        self._step_epoch: list[float | None] = []

    # ---------------------------------------------------------------- logging
    def log(self, epoch: float, *, train: Mapping[str, Any] | None = None,
            val: Mapping[str, Any] | None = None, lr: float | None = None,
            stats: Mapping[str, Any] | None = None) -> None:
        """Record one epoch.

        ``train`` / ``val`` map metric names to numbers (``"acc"`` is stored as ``"accuracy"``);
        ``stats`` is the dict of ``lossdiag.Metrics(...).compute()`` on the validation data.
        Logging the same epoch twice in a row merges the two records.
        """
        e = _to_float(epoch, "epoch")
        if e is None or not math.isfinite(e):
            raise ValueError(f"epoch must be a finite number, got {epoch!r}")
        if self._epochs.x and e < self._epochs.x[-1]:
            raise ValueError(
                f"epoch must not decrease: got {epoch!r} after {self._epochs.x[-1]!r}")
        row = self._row(train, val, lr)
        i = self._epochs.add_row(e, row, merge=True)
        if stats is not None:
            if not isinstance(stats, Mapping):
                raise TypeError(f"stats must be the dict of Metrics.compute(), got {type(stats)}")
            self._stats[i] = dict(stats)

    def log_step(self, step: float, *, train: Mapping[str, Any] | None = None,
                 val: Mapping[str, Any] | None = None, lr: float | None = None,
                 epoch: float | None = None) -> None:
        """Record one optimisation step (per-step logs; the epoch is optional)."""
        s = _to_float(step, "step")
        if s is None or not math.isfinite(s):
            raise ValueError(f"step must be a finite number, got {step!r}")
        if self._steps.x and s < self._steps.x[-1]:
            raise ValueError(f"step must not decrease: got {step!r} after {self._steps.x[-1]!r}")
        row = self._row(train, val, lr)
        before = len(self._steps)
        self._steps.add_row(s, row, merge=True)
        if len(self._steps) > before:
            self._step_epoch.append(_to_float(epoch, "epoch"))
        elif epoch is not None:
            self._step_epoch[-1] = _to_float(epoch, "epoch")

    @staticmethod
    def _row(train: Mapping[str, Any] | None, val: Mapping[str, Any] | None,
             lr: Any) -> dict[str, float | None]:
        row: dict[str, float | None] = {}
        for split, d in (("train", train), ("val", val)):
            if d is None:
                continue
            if not isinstance(d, Mapping):
                raise TypeError(f"{split} must be a dict of metric values, got {type(d).__name__}")
            for k, v in d.items():
                if not isinstance(k, str) or not k:
                    raise TypeError(f"{split} metric names must be non-empty strings, got {k!r}")
                row[f"{split}/{normalize_metric_name(k)}"] = _to_float(v, f"{split}[{k!r}]")
        if lr is not None:
            row["lr"] = _to_float(lr, "lr")
        return row

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._epochs)

    def __repr__(self) -> str:
        names = ", ".join(self.keys()) or "no metrics"
        steps = f", {len(self._steps)} steps" if len(self._steps) else ""
        return f"<History {len(self)} epochs{steps}: {names}>"

    @property
    def epochs(self) -> np.ndarray:
        """Epoch numbers as logged (float64)."""
        return self._epochs.xs()

    def keys(self, level: str = "epoch") -> list[str]:
        """Stored column keys (``'train/loss'``, ``'val/accuracy'``, ``'lr'``...)."""
        return list(self._table(level).cols)

    def _table(self, level: str) -> _Table:
        if level == "epoch":
            return self._epochs
        if level == "step":
            return self._steps
        raise ValueError(f"level must be 'epoch' or 'step', got {level!r}")

    def _split(self, split: str, level: str = "epoch") -> dict[str, np.ndarray]:
        pre = split + "/"
        return {k[len(pre):]: v for k, (v, _) in self._table(level).arrays().items()
                if k.startswith(pre)}

    @property
    def train(self) -> dict[str, np.ndarray]:
        """``{metric: per-epoch values}`` of the training split (NaN where missing)."""
        return self._split("train")

    @property
    def val(self) -> dict[str, np.ndarray]:
        """``{metric: per-epoch values}`` of the validation split (NaN where missing)."""
        return self._split("val")

    @property
    def lr(self) -> np.ndarray | None:
        """Per-epoch learning rate, or None when it was never logged."""
        a = self._epochs.arrays().get("lr")
        return None if a is None else a[0]

    @property
    def stats(self) -> list[dict[str, Any] | None]:
        """Per-epoch validation statistics (``Metrics.compute()`` dicts), None where absent."""
        return [self._stats.get(i) for i in range(len(self._epochs))]

    @property
    def has_steps(self) -> bool:
        return len(self._steps) > 0

    @property
    def steps(self) -> np.ndarray:
        """Step numbers of the per-step records (empty when none)."""
        return self._steps.xs()

    @property
    def step_epochs(self) -> np.ndarray:
        """Epoch of each per-step record (NaN where unknown)."""
        return np.array(self._step_epoch, dtype=np.float64)

    @property
    def step_train(self) -> dict[str, np.ndarray]:
        return self._split("train", "step")

    @property
    def step_val(self) -> dict[str, np.ndarray]:
        return self._split("val", "step")

    @property
    def step_lr(self) -> np.ndarray | None:
        a = self._steps.arrays().get("lr")
        return None if a is None else a[0]

    def column(self, key: str, level: str = "epoch") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, values, present)`` of one stored column (``'val/loss'``, ``'lr'``...)."""
        t = self._table(level)
        arrs = t.arrays()
        if key not in arrs:
            raise KeyError(f"{key!r} not in history (has {', '.join(t.cols) or 'nothing'})")
        v, p = arrs[key]
        return t.xs(), v, p

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_arrays(cls, epochs: Sequence[float] | np.ndarray | None = None, *,
                    train: Mapping[str, Any] | None = None,
                    val: Mapping[str, Any] | None = None, lr: Any = None,
                    stats: Sequence[Mapping[str, Any] | None] | None = None,
                    steps: Sequence[float] | np.ndarray | None = None,
                    step_train: Mapping[str, Any] | None = None,
                    step_val: Mapping[str, Any] | None = None, step_lr: Any = None,
                    num_classes: int | None = None, source: str | None = None,
                    meta: Mapping[str, Any] | None = None) -> History:
        """Build a history from arrays (NaN values are kept as logged NaN, not as missing).

        >>> import numpy as np
        >>> h = History.from_arrays(np.arange(3), train={"loss": [3.0, 2.0, 1.5]})
        >>> h.train["loss"].tolist()
        [3.0, 2.0, 1.5]
        """
        h = cls(num_classes=num_classes, source=source, meta=meta)
        if epochs is not None or train or val:
            if epochs is None:
                n = len(next(iter((train or val).values())))
                epochs = np.arange(n)
            h._epochs = _table_from(("epoch", epochs), train, val, lr)
        if steps is not None or step_train or step_val:
            if steps is None:
                n = len(next(iter((step_train or step_val).values())))
                steps = np.arange(n)
            h._steps = _table_from(("step", steps), step_train, step_val, step_lr)
            h._step_epoch = [None] * len(h._steps)
        if stats is not None:
            if len(stats) != len(h._epochs):
                raise ValueError(f"stats has {len(stats)} entries for {len(h._epochs)} epochs")
            h._stats = {i: dict(s) for i, s in enumerate(stats) if s is not None}
        return h

    # ---------------------------------------------------------------- serialisation
    def to_dict(self, *, stats_keys: Iterable[str] | None = None,
                digits: int | None = None) -> dict[str, Any]:
        """JSON-ready dict in lossdiag's own format (missing -> null, NaN/inf -> strings).

        ``stats_keys`` keeps only those keys of the statistics; ``digits`` rounds floats to
        that many significant digits (to keep fixtures small).
        """
        keep = None if stats_keys is None else set(stats_keys)

        def table(t: _Table) -> dict[str, Any]:
            return {"x": [_jnum(v, digits) for v in t.x],
                    "columns": {k: [_jnum(v, digits) for v in col] for k, col in t.cols.items()}}

        out: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                               "num_classes": self.num_classes, "source": self.source,
                               "meta": _jsonable(self.meta, digits),
                               "epochs": table(self._epochs)}
        if len(self._steps):
            st = table(self._steps)
            st["epoch"] = [_jnum(v, digits) for v in self._step_epoch]
            out["steps"] = st
        if self._stats:
            out["stats"] = {
                str(i): _jsonable({k: v for k, v in s.items() if keep is None or k in keep},
                                  digits)
                for i, s in sorted(self._stats.items())}
        return out

    def to_json(self, path: PathLike | None = None, **kwargs: Any) -> str:
        """Serialise to JSON text (and write it to ``path`` when given); see :meth:`to_dict`."""
        text = json.dumps(self.to_dict(**kwargs), separators=(",", ":"), allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    save = to_json

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str | None = None) -> History:
        """Inverse of :meth:`to_dict`."""
        src = source or "<dict>"
        if not isinstance(d, Mapping) or d.get("format") != FORMAT_NAME:
            raise HistoryFormatError(src, "not a lossdiag history",
                                     f'a JSON object with "format": "{FORMAT_NAME}"')
        try:
            h = cls(num_classes=d.get("num_classes"), source=d.get("source") or source,
                    meta=d.get("meta") or {})
            h._epochs = _table_from_json(d["epochs"], "epoch")
            if "steps" in d:
                h._steps = _table_from_json(d["steps"], "step")
                ep = d["steps"].get("epoch") or [None] * len(h._steps)
                h._step_epoch = [None if v is None else _jfloat(v) for v in ep]
            for k, s in (d.get("stats") or {}).items():
                h._stats[int(k)] = _unjson_stats(s)
        except HistoryFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise HistoryFormatError(src, f"malformed lossdiag history ({exc})",
                                     "the layout written by History.to_json") from None
        return h

    @classmethod
    def load(cls, path: PathLike) -> History:
        """Read a history written by :meth:`to_json`."""
        data = _read_json(path)
        return cls.from_dict(data, source=str(path))

    # ---------------------------------------------------------------- readers
    @classmethod
    def from_keras(cls, history: Any, *, num_classes: int | None = None) -> History:
        """From a Keras ``History`` object (``model.fit(...)``'s return) or its ``.history`` dict.

        >>> h = History.from_keras({"loss": [1.0, 0.5], "val_acc": [0.5, 0.7]})
        >>> h.val["accuracy"].tolist()
        [0.5, 0.7]
        """
        d = getattr(history, "history", history)
        if not isinstance(d, Mapping):
            raise TypeError(
                f"history must be a keras History or its .history dict, got {type(history)}")
        epochs = getattr(history, "epoch", None)
        return _from_columns(d, "<keras history>", epochs=epochs, num_classes=num_classes,
                             fmt="keras")

    @classmethod
    def from_keras_csv(cls, path: PathLike, *, num_classes: int | None = None) -> History:
        """From a Keras ``CSVLogger`` file (``epoch,accuracy,loss,val_accuracy,val_loss``)."""
        header, rows = _read_csv(path)
        if not header or header[0].strip().lower() != "epoch":
            raise HistoryFormatError(path, f"first column is {header[0]!r}" if header else
                                     "no header", "a Keras CSVLogger file starting with 'epoch'")
        cols = _csv_columns(path, header, rows)
        ep = cols.pop("epoch")
        return _from_columns(cols, str(path), epochs=ep, num_classes=num_classes,
                             fmt="keras-csv")

    @classmethod
    def from_lightning_csv(cls, path: PathLike, *, num_classes: int | None = None) -> History:
        """From a PyTorch Lightning ``CSVLogger`` ``metrics.csv`` (interleaved rows, gaps).

        Columns logged once per epoch (``val_loss``, ``train_loss_epoch``) become per-epoch
        metrics; columns logged several times per epoch (``train_loss_step``) become per-step
        metrics and their per-epoch mean fills the epoch record when no ``_epoch`` column exists.
        """
        header, rows = _read_csv(path)
        low = [c.strip().lower() for c in header]
        if "epoch" not in low or "step" not in low:
            raise HistoryFormatError(path, f"columns {header}",
                                     "a Lightning metrics.csv with 'epoch' and 'step' columns")
        cols = _csv_columns(path, header, rows)
        epoch_raw, ep_present = cols.pop("epoch")
        step_raw, st_present = cols.pop("step")
        if not ep_present.all():
            # rows without an epoch (e.g. logged before training) take the previous epoch
            epoch_raw = _ffill(epoch_raw, ep_present)
        return _from_interleaved(cols, epoch_raw, step_raw, st_present, str(path),
                                 num_classes=num_classes, fmt="lightning-csv")

    @classmethod
    def from_hf_trainer_state(cls, path: PathLike, *,
                              num_classes: int | None = None) -> History:
        """From a Hugging Face ``trainer_state.json`` (its ``log_history``)."""
        data = _read_json(path)
        if not isinstance(data, Mapping) or not isinstance(data.get("log_history"), list):
            raise HistoryFormatError(path, "no 'log_history' list",
                                     "a Hugging Face trainer_state.json")
        return _from_hf(data["log_history"], str(path), num_classes=num_classes)

    @classmethod
    def from_csv(cls, path: PathLike, mapping: Mapping[str, str] | None = None, *,
                 num_classes: int | None = None) -> History:
        """From a plain CSV file (comma, semicolon or tab separated) with a header row.

        The x column is ``epoch`` (or ``step``/``iteration``/``iter``; else the row number).
        ``mapping`` maps canonical keys to column names, e.g.
        ``{"epoch": "ep", "train/loss": "trn", "val/loss": "vl", "val/accuracy": "va",
        "lr": "LR"}``; unmapped columns are recognised by their names (``val_`` prefix ...).
        """
        header, rows = _read_csv(path)
        cols = _csv_columns(path, header, rows)
        return _from_plain(cols, str(path), mapping, num_classes=num_classes, fmt="csv")

    @classmethod
    def from_json(cls, path: PathLike, mapping: Mapping[str, str] | None = None, *,
                  num_classes: int | None = None) -> History:
        """From a JSON file: lossdiag's format, a HF trainer state, a dict of lists (Keras
        ``history.history`` dumped with ``json.dump``) or a list of row objects."""
        data = _read_json(path)
        return _from_json_data(data, str(path), mapping, num_classes=num_classes)

    @classmethod
    def from_tensorboard(cls, path: PathLike, *, num_classes: int | None = None) -> History:
        """From TensorBoard event files (a file or a log directory, scanned recursively).

        Needs the optional ``tensorboard`` package (``pip install lossdiag[tensorboard]``).
        Scalars are keyed by tag; ``epoch``-named tags or a run directory named ``validation``
        / ``train`` (the Keras TensorBoard callback layout) give the split.
        """
        return _from_tensorboard(Path(path), num_classes=num_classes)

    @classmethod
    def from_path(cls, path: PathLike, *, num_classes: int | None = None,
                  mapping: Mapping[str, str] | None = None) -> History:
        """Read any supported log, detecting its format from the name and content.

        A directory is searched for ``metrics.csv`` (Lightning), ``trainer_state.json``
        (Hugging Face; the newest ``checkpoint-*`` one), TensorBoard event files, or a single
        ``*.csv`` / ``*.json`` log.
        """
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or directory")
        if p.is_dir():
            p = _find_log_in_dir(p)
            if p.is_dir():
                return cls.from_tensorboard(p, num_classes=num_classes)
        name = p.name.lower()
        if "tfevents" in name:
            return cls.from_tensorboard(p, num_classes=num_classes)
        if name.endswith(".json"):
            return cls.from_json(p, mapping, num_classes=num_classes)
        if name.endswith((".csv", ".tsv", ".log", ".txt")):
            header, _ = _read_csv(p)
            low = [c.strip().lower() for c in header]
            if mapping is None and "epoch" in low and "step" in low:
                return cls.from_lightning_csv(p, num_classes=num_classes)
            if mapping is None and low and low[0] == "epoch" and _looks_keras(low[1:]):
                return cls.from_keras_csv(p, num_classes=num_classes)
            return cls.from_csv(p, mapping, num_classes=num_classes)
        # unknown extension: sniff the content
        head = _read_text(p)[:2048].lstrip()
        if head.startswith(("{", "[")):
            return cls.from_json(p, mapping, num_classes=num_classes)
        if "," in head.split("\n", 1)[0] or "\t" in head.split("\n", 1)[0]:
            return cls.from_csv(p, mapping, num_classes=num_classes)
        raise HistoryFormatError(
            p, "unrecognised log format",
            "a Keras CSVLogger/History JSON, Lightning metrics.csv, HF trainer_state.json, "
            "TensorBoard events file, plain CSV/JSON, or a lossdiag history JSON")


# --------------------------------------------------------------------------------------------
# helpers for readers
# --------------------------------------------------------------------------------------------


def _jnum(v: Any, digits: int | None) -> Any:
    if v is None:
        return None
    f = float(v)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if digits is not None and f != 0.0:
        f = float(f"{f:.{digits}g}")
    if f.is_integer() and abs(f) < 2**53:
        return int(f)
    return f


def _jfloat(v: Any) -> float:
    if isinstance(v, str):
        return float(v)  # "nan", "inf", "-inf"
    return float(v)


def _jsonable(obj: Any, digits: int | None = None) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "iub":
            return obj.tolist()
        return [_jsonable(v, digits) for v in obj.tolist()]
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, digits) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _jnum(obj, digits)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _unjson_stats(s: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in s.items():
        if isinstance(v, Mapping):
            inner = _unjson_stats(v)
            if k == "top_k_accuracy":
                inner = {int(kk): vv for kk, vv in inner.items()}
            out[k] = inner
        elif isinstance(v, list):
            out[k] = _list_to_array(v)
        elif isinstance(v, str) and v in ("nan", "inf", "-inf"):
            out[k] = float(v)
        else:
            out[k] = v
    return out


def _list_to_array(v: list[Any]) -> np.ndarray:
    def conv(x: Any) -> Any:
        if isinstance(x, list):
            return [conv(y) for y in x]
        if x is None:
            return math.nan
        if isinstance(x, str):
            return float(x)
        return x

    arr = np.array(conv(v))
    if arr.dtype == object:
        return np.array(conv(v), dtype=np.float64)
    return arr


def _table_from(x: tuple[str, Any], train: Mapping[str, Any] | None,
                val: Mapping[str, Any] | None, lr: Any) -> _Table:
    xname, xv = x
    xa = np.asarray(xv, dtype=np.float64)
    if xa.ndim != 1:
        raise ValueError(f"{xname} must be 1-D, got shape {xa.shape}")
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, d in (("train", train), ("val", val)):
        for k, v in (d or {}).items():
            a = np.asarray(v, dtype=np.float64)
            if a.shape != xa.shape:
                raise ValueError(f"{split}[{k!r}] has shape {a.shape}, expected {xa.shape}")
            cols[f"{split}/{normalize_metric_name(k)}"] = (a, np.ones(a.shape, bool))
    if lr is not None:
        a = np.asarray(lr, dtype=np.float64)
        if a.shape != xa.shape:
            raise ValueError(f"lr has shape {a.shape}, expected {xa.shape}")
        cols["lr"] = (a, ~np.isnan(a))
    return _Table.from_arrays(xname, xa, cols)


def _table_from_json(d: Mapping[str, Any], xname: str) -> _Table:
    x = [_jfloat(v) for v in d["x"]]
    cols = {}
    for k, col in d["columns"].items():
        if len(col) != len(x):
            raise ValueError(f"column {k!r} has {len(col)} values for {len(x)} rows")
        present = np.array([v is not None for v in col], dtype=bool)
        vals = np.array([math.nan if v is None else _jfloat(v) for v in col], dtype=np.float64)
        cols[k] = (vals, present)
    return _Table.from_arrays(xname, x, cols)


def _read_text(path: PathLike) -> str:
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise HistoryFormatError(p, "is a directory", "a log file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HistoryFormatError(p, "is not UTF-8 text (binary file?)",
                                 "a CSV or JSON training log") from None


def _read_json(path: PathLike) -> Any:
    text = _read_text(path)
    if not text.strip():
        raise HistoryFormatError(path, "file is empty", "JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HistoryFormatError(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                                 f"{exc.msg}", "a JSON training log") from None


def _read_csv(path: PathLike) -> tuple[list[str], list[list[str]]]:
    text = _read_text(path)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise HistoryFormatError(path, "file is empty", "a CSV header row and data rows")
    first = lines[0]
    delim = max((",", ";", "\t"), key=first.count)
    if first.count(delim) == 0:
        raise HistoryFormatError(path, f"header {first[:80]!r} has no column separator",
                                 "comma, semicolon or tab separated columns")
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delim)
    header = [h.strip() for h in next(reader)]
    if any(h == "" for h in header):
        raise HistoryFormatError(path, f"empty column name in header {header}",
                                 "a named column for every field")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise HistoryFormatError(path, f"duplicate column names {dup}", "unique column names")
    rows = list(reader)
    return header, rows


_NUM_WORDS = {"nan": math.nan, "-nan": math.nan, "inf": math.inf, "+inf": math.inf,
              "-inf": -math.inf, "infinity": math.inf, "-infinity": -math.inf,
              "+infinity": math.inf}


def _csv_columns(path: PathLike, header: list[str],
                 rows: list[list[str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not rows:
        raise HistoryFormatError(path, "header but no data rows", "at least one row of values")
    n = len(header)
    vals = np.full((len(rows), n), np.nan)
    present = np.zeros((len(rows), n), dtype=bool)
    for i, row in enumerate(rows):
        if len(row) != n:
            raise HistoryFormatError(path, f"line {i + 2} has {len(row)} fields, header has {n}",
                                     "the same number of fields on every line")
        for j, cell in enumerate(row):
            c = cell.strip()
            if c == "":
                continue
            try:
                v = float(c)
            except ValueError:
                w = _NUM_WORDS.get(c.lower())
                if w is None:
                    raise HistoryFormatError(
                        path, f"line {i + 2}, column {header[j]!r}: {c!r} is not a number",
                        "numeric values (empty cells allowed)") from None
                v = w
            vals[i, j] = v
            present[i, j] = True
    return {h: (vals[:, j], present[:, j]) for j, h in enumerate(header)}


def _looks_keras(names: Sequence[str]) -> bool:
    known = 0
    for nm in names:
        split, m = split_metric_key(nm)
        if split == "other":
            return False
        if nm.startswith(("train_", "train/")):
            return False  # Keras never prefixes training metrics
        known += metric_direction(m) is not None or split == "lr"
    return known > 0


def _ffill(vals: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = vals.copy()
    last = np.nan
    for i in range(len(out)):
        if present[i]:
            last = out[i]
        else:
            out[i] = last
    if np.isnan(out).any():
        first = out[~np.isnan(out)]
        out[np.isnan(out)] = first[0] if first.size else 0.0
    return out


def _group_columns(cols: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   path: str) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Map raw column names to canonical keys; drop bookkeeping columns."""
    out: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for raw, (v, p) in cols.items():
        split, metric = split_metric_key(raw)
        if split == "other":
            continue
        key = "lr" if split == "lr" else f"{split}/{metric}"
        if key in out:
            # two columns map to one key (e.g. "lr" and "learning_rate"): keep the fuller one
            if out[key][2].sum() >= p.sum():
                continue
        out[key] = (raw, v, p)
    return out


def _from_columns(d: Mapping[str, Any], source: str, *, epochs: Any = None,
                  num_classes: int | None = None, fmt: str) -> History:
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    n = None
    for k, v in d.items():
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], np.ndarray):
            arr, pres = v
        else:
            try:
                arr = np.array([math.nan if x is None else _jfloat(x) for x in v], np.float64)
            except (TypeError, ValueError):
                raise HistoryFormatError(source, f"column {k!r} is not a list of numbers",
                                         "metric name -> list of per-epoch numbers") from None
            pres = np.array([x is not None for x in v], dtype=bool)
        if n is None:
            n = len(arr)
        elif len(arr) != n:
            raise HistoryFormatError(source, f"column {k!r} has {len(arr)} values, others {n}",
                                     "one value per epoch in every column")
        cols[str(k)] = (arr, pres)
    if not cols or not n:
        raise HistoryFormatError(source, "no metric values", "at least one metric column")
    if epochs is None:
        ep = np.arange(n, dtype=np.float64)
    elif isinstance(epochs, tuple):
        ep = _ffill(*epochs)
    else:
        ep = np.asarray(epochs, dtype=np.float64)
        if ep.shape != (n,):
            raise HistoryFormatError(source, f"{len(ep)} epochs for {n} values",
                                     "one epoch number per row")
    grouped = _group_columns(cols, source)
    if not any(k != "lr" and metric_direction(k.split("/", 1)[1]) for k in grouped):
        raise HistoryFormatError(source, f"no recognisable metric among columns {list(d)}",
                                 "columns such as loss, accuracy, val_loss, val_accuracy")
    table = _Table.from_arrays("epoch", ep, {k: (v, p) for k, (_, v, p) in grouped.items()})
    h = History(num_classes=num_classes, source=source, meta={"format": fmt})
    h._epochs = table
    return h


def _from_plain(cols: dict[str, tuple[np.ndarray, np.ndarray]], source: str,
                mapping: Mapping[str, str] | None, *, num_classes: int | None,
                fmt: str) -> History:
    cols = dict(cols)
    renamed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    xkey = None
    xvals = None
    if mapping:
        if not isinstance(mapping, Mapping):
            raise TypeError(f"mapping must be a dict of canonical key -> column, got {mapping!r}")
        for canon, colname in mapping.items():
            if colname not in cols:
                raise HistoryFormatError(source, f"mapped column {colname!r} (for {canon!r}) "
                                         f"not found", f"one of {sorted(cols)}")
            v = cols.pop(colname)
            if canon in ("epoch", "step"):
                xkey, xvals = canon, v
            elif canon == "lr" or canon.startswith(("train/", "val/")):
                renamed[canon if canon == "lr" else
                        canon.split("/", 1)[0] + "/" + normalize_metric_name(canon.split("/")[1])
                        ] = v
            else:
                raise ValueError(f"mapping key {canon!r} must be 'epoch', 'step', 'lr', "
                                 f"'train/<metric>' or 'val/<metric>'")
    if xkey is None:
        for cand in ("epoch", "epochs", "step", "steps", "global_step", "iteration", "iter"):
            hit = next((c for c in cols if c.strip().lower() == cand), None)
            if hit is not None:
                xkey = "step" if cand not in ("epoch", "epochs") else "epoch"
                xvals = cols.pop(hit)
                break
    grouped = _group_columns(cols, source)
    for k, (_, v, p) in grouped.items():
        renamed.setdefault(k, (v, p))
    if not any(k != "lr" and metric_direction(k.split("/", 1)[1]) for k in renamed):
        raise HistoryFormatError(source, f"no recognisable metric among columns "
                                 f"{list(cols) or 'none'}",
                                 "columns named like loss, val_loss, accuracy, val_iou, or a "
                                 "mapping such as {'val/loss': 'vl'} (CLI: --map val/loss=vl)")
    n = len(next(iter(renamed.values()))[0])
    if xvals is None:
        x = np.arange(n, dtype=np.float64)
        xkey = "epoch"
    else:
        x = _ffill(*xvals) if not xvals[1].all() else xvals[0]
    if len(x) > 1 and np.any(np.diff(x) < 0):
        raise HistoryFormatError(source, f"the {xkey} column decreases", f"increasing {xkey}s")
    h = History(num_classes=num_classes, source=source, meta={"format": fmt})
    if xkey == "step":
        h._steps = _Table.from_arrays("step", x, renamed)
        h._step_epoch = [None] * len(x)
    elif len(np.unique(x)) < len(x):
        # several rows per epoch: interleaved log -> treat like Lightning
        return _from_interleaved(
            {k: v for k, v in renamed.items()}, x, np.arange(len(x), dtype=np.float64),
            np.ones(len(x), bool), source, num_classes=num_classes, fmt=fmt, canonical=True)
    else:
        h._epochs = _Table.from_arrays("epoch", x, renamed)
    return h


def _from_interleaved(cols: Mapping[str, tuple[np.ndarray, np.ndarray]], epoch: np.ndarray,
                      step: np.ndarray, step_present: np.ndarray, source: str, *,
                      num_classes: int | None, fmt: str, canonical: bool = False) -> History:
    """Rows of several kinds interleaved (Lightning): split per-step and per-epoch columns."""
    if canonical:
        grouped = {k: (k, v, p) for k, (v, p) in cols.items()}
    else:
        grouped = _group_columns(cols, source)
    if not any(k != "lr" for k in grouped):
        raise HistoryFormatError(source, f"no recognisable metric among columns {list(cols)}",
                                 "columns such as train_loss, val_loss, val_acc")
    uniq_epochs, inv = np.unique(epoch, return_inverse=True)
    ne = len(uniq_epochs)
    epoch_cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    step_cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, (raw, v, p) in grouped.items():
        per_epoch = np.bincount(inv[p], minlength=ne)
        rawl = raw.lower()
        is_step = rawl.endswith("_step") or (per_epoch.max(initial=0) > 1
                                             and not rawl.endswith("_epoch"))
        base = key
        if base.endswith("_epoch") or base.endswith("_step"):
            base = base.rsplit("_", 1)[0]
        if is_step:
            step_cols[base] = (v, p)
        else:
            ev = np.full(ne, np.nan)
            ep_ = np.zeros(ne, bool)
            idx = np.flatnonzero(p)
            ev[inv[idx]] = v[idx]  # last value of the epoch wins
            ep_[inv[idx]] = True
            if base in epoch_cols and epoch_cols[base][1].sum() >= ep_.sum():
                continue
            epoch_cols[base] = (ev, ep_)
    # per-step metrics without an epoch-level counterpart: per-epoch mean of the steps
    for base, (v, p) in step_cols.items():
        if base in epoch_cols:
            continue
        sums = np.bincount(inv[p], weights=v[p], minlength=ne)
        cnt = np.bincount(inv[p], minlength=ne)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / cnt
        epoch_cols[base] = (mean, cnt > 0)
    h = History(num_classes=num_classes, source=source, meta={"format": fmt})
    keep = np.zeros(ne, bool)
    for _, p in epoch_cols.values():
        keep |= p
    h._epochs = _Table.from_arrays(
        "epoch", uniq_epochs[keep], {k: (v[keep], p[keep]) for k, (v, p) in epoch_cols.items()})
    if step_cols:
        any_step = np.zeros(len(step), bool)
        for _, p in step_cols.values():
            any_step |= p
        rows = np.flatnonzero(any_step & step_present)
        if rows.size:
            sx = step[rows]
            order = np.argsort(sx, kind="stable")
            rows = rows[order]
            h._steps = _Table.from_arrays(
                "step", step[rows], {k: (v[rows], p[rows]) for k, (v, p) in step_cols.items()})
            h._step_epoch = epoch[rows].tolist()
    return h


_HF_SKIP = ("runtime", "per_second", "flos", "total_", "grad_norm", "epoch", "step")


def _from_hf(log: list[Any], source: str, *, num_classes: int | None) -> History:
    train_rows: list[dict[str, Any]] = []
    eval_rows: list[dict[str, Any]] = []
    for i, entry in enumerate(log):
        if not isinstance(entry, Mapping):
            raise HistoryFormatError(source, f"log_history[{i}] is not an object",
                                     "a list of {'step': ..., 'loss': ...} objects")
        if any(k.startswith("eval_") for k in entry):
            eval_rows.append(dict(entry))
        elif "loss" in entry or "learning_rate" in entry:
            train_rows.append(dict(entry))
        # the final summary row (train_runtime, train_loss, ...) is skipped
    if not train_rows and not eval_rows:
        raise HistoryFormatError(source, "log_history has no training or evaluation entries",
                                 "entries with 'loss' or 'eval_loss'")
    h = History(num_classes=num_classes, source=source, meta={"format": "hf-trainer-state"})
    for r in train_rows:
        step = r.get("step")
        if step is None:
            continue
        h.log_step(step, train={k: r[k] for k in r if _hf_metric(k)},
                   lr=r.get("learning_rate"), epoch=r.get("epoch"))
    if eval_rows:
        tr_ep = np.array([np.nan if r.get("epoch") is None else r["epoch"] for r in train_rows])
        tr_loss = np.array([np.nan if r.get("loss") is None else _jfloat(r["loss"])
                            for r in train_rows])
        tr_lr = np.array([np.nan if r.get("learning_rate") is None else r["learning_rate"]
                          for r in train_rows])
        prev = -np.inf
        for r in sorted(eval_rows, key=lambda r: (r.get("epoch") or 0, r.get("step") or 0)):
            ep = r.get("epoch")
            if ep is None:
                ep = r.get("step", 0)
            sel = (tr_ep > prev) & (tr_ep <= ep) if tr_ep.size else np.zeros(0, bool)
            train: dict[str, float] = {}
            lr = None
            if sel.any():
                vals = tr_loss[sel]
                if np.isfinite(vals).all():
                    train["loss"] = float(vals.mean())
                else:
                    train["loss"] = float(vals[~np.isfinite(vals)][0])
                lrs = tr_lr[sel]
                if np.isfinite(lrs).any():
                    lr = float(lrs[np.isfinite(lrs)][-1])
            val = {k[5:]: r[k] for k in r if k.startswith("eval_") and _hf_metric(k[5:])}
            if h._epochs.x and float(ep) <= h._epochs.x[-1]:
                continue  # duplicate evaluation at the same epoch (e.g. final eval)
            h.log(ep, train=train, val=val, lr=lr)
            prev = ep
    elif train_rows:
        # no evaluation: per-epoch means of the training loss
        eps = np.array([r.get("epoch", np.nan) for r in train_rows], dtype=float)
        if np.isfinite(eps).all():
            tr_loss = np.array([_jfloat(r.get("loss", math.nan)) for r in train_rows])
            for e in np.unique(np.ceil(eps)):
                sel = (eps > e - 1) & (eps <= e)
                if sel.any():
                    h.log(e, train={"loss": float(np.nanmean(tr_loss[sel]))})
    return h


def _hf_metric(k: str) -> bool:
    return not any(s in k for s in _HF_SKIP) and k != "learning_rate"


def _from_json_data(data: Any, source: str, mapping: Mapping[str, str] | None, *,
                    num_classes: int | None) -> History:
    if isinstance(data, Mapping):
        if data.get("format") == FORMAT_NAME:
            h = History.from_dict(data, source=source)
            if num_classes is not None:
                h.num_classes = num_classes
            return h
        if isinstance(data.get("log_history"), list):
            return _from_hf(data["log_history"], source, num_classes=num_classes)
        if isinstance(data.get("history"), Mapping):
            data = data["history"]
        if data and all(isinstance(v, list) for v in data.values()):
            if mapping:
                cols = {str(k): _json_col(v, source, k) for k, v in data.items()}
                return _from_plain(cols, source, mapping, num_classes=num_classes, fmt="json")
            ep = None
            d = dict(data)
            for cand in ("epoch", "epochs"):
                if cand in d:
                    ep = np.asarray(d.pop(cand), dtype=float)
            return _from_columns(d, source, epochs=ep, num_classes=num_classes, fmt="json")
        raise HistoryFormatError(source, f"JSON object with keys {sorted(data)[:8]}",
                                 "a dict of metric lists, a list of rows, 'log_history' "
                                 "(Hugging Face) or a lossdiag history")
    if isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
        keys: list[str] = []
        for r in data:
            for k in r:
                if k not in keys:
                    keys.append(k)
        cols = {}
        for k in keys:
            cols[str(k)] = _json_col([r.get(k) for r in data], source, k)
        return _from_plain(cols, source, mapping, num_classes=num_classes, fmt="json")
    raise HistoryFormatError(source, f"JSON {type(data).__name__} at the top level",
                             "an object of metric lists or a non-empty list of row objects")


def _json_col(v: list[Any], source: str, k: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        vals = np.array([math.nan if x is None else _jfloat(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        raise HistoryFormatError(source, f"field {k!r} holds non-numeric values",
                                 "numbers (or null) in every metric field") from None
    return vals, np.array([x is not None for x in v], dtype=bool)


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


def _from_tensorboard(path: Path, *, num_classes: int | None) -> History:
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        raise ImportError(
            f"{path}: reading TensorBoard event files needs the optional 'tensorboard' package "
            "(pip install 'lossdiag[tensorboard]')") from None
    files = [path] if path.is_file() else sorted(path.glob("**/*tfevents*"))
    if not files:
        raise HistoryFormatError(path, "no TensorBoard event files", "events.out.tfevents.*")
    per_key: dict[str, dict[float, float]] = {}
    steps_seen: set[float] = set()
    for f in files:
        acc = event_accumulator.EventAccumulator(
            str(f), size_guidance={event_accumulator.SCALARS: 0,
                                   event_accumulator.TENSORS: 0})
        try:
            acc.Reload()
        except Exception as exc:  # corrupt record, wrong file
            raise HistoryFormatError(f, f"cannot read events ({exc})",
                                     "a TensorBoard event file") from None
        run = f.parent.name.lower()
        default_split = "val" if run in ("validation", "val", "valid", "eval") else "train"
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            for ev in acc.Scalars(tag):
                _tb_put(per_key, tag, default_split, ev.step, ev.value)
        for tag in tags.get("tensors", []):
            for ev in acc.Tensors(tag):
                try:
                    from tensorboard.util import tensor_util
                    val = float(np.asarray(tensor_util.make_ndarray(ev.tensor_proto)).reshape(()))
                except Exception:
                    continue
                _tb_put(per_key, tag, default_split, ev.step, val)
    if not per_key:
        raise HistoryFormatError(path, "no scalar summaries", "scalar metrics logged to TB")
    for d in per_key.values():
        steps_seen.update(d)
    xs = np.array(sorted(steps_seen), dtype=np.float64)
    index = {x: i for i, x in enumerate(xs.tolist())}
    cols = {}
    for key, d in per_key.items():
        v = np.full(len(xs), np.nan)
        p = np.zeros(len(xs), bool)
        for s, val in d.items():
            v[index[s]] = val
            p[index[s]] = True
        cols[key] = (v, p)
    h = History(num_classes=num_classes, source=str(path), meta={"format": "tensorboard"})
    epoch_like = all(k.split("/", 1)[-1].startswith("epoch") for k in per_key if k != "lr")
    if epoch_like or len(xs) <= 1000:
        h._epochs = _Table.from_arrays("epoch", xs, cols)
    else:
        h._steps = _Table.from_arrays("step", xs, cols)
        h._step_epoch = [None] * len(xs)
    return h


def _tb_put(per_key: dict[str, dict[float, float]], tag: str, default_split: str,
            step: float, value: float) -> None:
    t = tag
    if t.startswith("epoch_"):
        t = t[len("epoch_"):]
    split, metric = split_metric_key(t, default_split=default_split)
    if split == "other":
        return
    key = "lr" if split == "lr" else f"{split}/{metric}"
    per_key.setdefault(key, {})[float(step)] = float(value)
