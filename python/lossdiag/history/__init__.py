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

from ._io import HistoryFormatError
from ._names import metric_direction, normalize_metric_name, split_metric_key
from ._table import _Table  # noqa: F401 - used by tests and tools
from .core import FORMAT_NAME, FORMAT_VERSION, History  # noqa: F401 - re-exported

__all__ = [
    "History",
    "HistoryFormatError",
    "metric_direction",
    "normalize_metric_name",
    "split_metric_key",
]

