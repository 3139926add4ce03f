"""lossdiag's one-pass statistics as ``torchmetrics.Metric`` objects.

:class:`ClassificationStats` and :class:`SegmentationStats` accumulate exactly the sums of
:class:`lossdiag.Metrics` - a confusion matrix, per-class loss sums, confidence and margin
histograms, a few scalars: memory O(C^2 + bins), never O(samples) - as torchmetrics states
registered with ``dist_reduce_fx="sum"``. So ``update`` / ``compute`` / ``reset``, ``forward``
(batch value plus accumulation), ``metric.to(device)``, state dicts and the DDP sync behave as
torchmetrics users expect, and ``compute()`` returns the same dict as ``Metrics.compute()``
(loss, accuracy, top-k, balanced accuracy, per-class precision / recall / IoU / Dice / F1,
mIoU, mDice, kappa, ECE / MCE, reliability diagram, label and prediction frequencies, ...),
bit for bit in one process.

Inputs are **logits** (not probabilities), as for ``lossdiag.evaluate``: any float dtype,
``(N, C)`` / ``(N, C, d1, ...)`` with ``axis=1`` or channels-last with ``axis=-1``; targets are
class indices (``ignore_index`` skipped) or class probabilities. CPU tensors are read in place
through NumPy (tensors that require grad are detached; CPU bfloat16 is upcast to float32, one
copy); CUDA tensors go to lossdiag's GPU backend through DLPack (needs CuPy) and only the
O(C^2 + bins) sums of each batch come back to the host.

Example:
    >>> import torch
    >>> from lossdiag.torchmetrics import SegmentationStats
    >>> m = SegmentationStats(num_classes=3)
    >>> g = torch.Generator().manual_seed(0)
    >>> m.update(torch.randn(2, 3, 8, 8, generator=g), torch.randint(0, 3, (2, 8, 8), generator=g))
    >>> r = m.compute()
    >>> r["count"], r["confusion"].shape
    (128, (3, 3))
    >>> sorted(m.scalars(r, prefix="val_"))[:3]
    ['val_accuracy', 'val_balanced_accuracy', 'val_ece']

In a LightningModule::

    self.val_stats = SegmentationStats(num_classes=21)
    ...
    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_stats.update(logits, y)
    def on_validation_epoch_end(self):
        self.log_dict(self.val_stats.scalars(prefix="val_"))   # synced across processes
        self.val_stats.reset()

``lossdiag.lightning.DiagnosisCallback`` finds such a metric on the module and passes its
statistics to the live diagnosis.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from .core.metrics import Metrics, derive
from .monitor import _host_array, scalars

__all__ = ["ClassificationStats", "LossdiagStats", "SegmentationStats"]

_ABSENT = ("nan", "zero", "one")


class LossdiagStats(Metric):
    """A torchmetrics ``Metric`` holding the sums of :class:`lossdiag.Metrics`.

    Args:
        num_classes: C (2 with ``binary=True``).
        absent: IoU/Dice convention for a class absent from target and prediction, as
            ``Metrics.compute(absent=...)``: "nan" (excluded from the means), "zero", "one".
        other arguments: as :class:`lossdiag.Metrics` (``axis``, ``weight``, ``ignore_index``,
            ``label_smoothing``, ``top_k``, ``bins``, ``binary``, ``imagewise``, ``pos_weight``,
            ``threshold``).
        kwargs: torchmetrics options (``sync_on_compute``, ``dist_sync_fn``, ...).

    States are named as the keys of ``Metrics.state_dict()`` (``confusion``, ``nll_sum``,
    ``count``, ...): ``Metrics.load_state_dict({k: v.cpu().numpy() for k, v in
    metric.metric_state.items()})`` moves them over.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, num_classes: int, *, axis: int = 1, weight: Any = None,
                 ignore_index: int = -100, label_smoothing: float = 0.0, top_k: Any = (1,),
                 bins: int = 20, binary: bool = False, imagewise: bool = False,
                 pos_weight: Any = None, threshold: float = 0.0, absent: str = "nan",
                 confusion: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if absent not in _ABSENT:
            raise ValueError(f"absent: must be one of {_ABSENT}, got {absent!r}")
        # the lossdiag accumulator validates the options and evaluates each batch
        self._acc = Metrics(num_classes, axis=axis, weight=_small(weight),
                            ignore_index=ignore_index, label_smoothing=label_smoothing,
                            top_k=top_k, bins=bins, binary=binary, imagewise=imagewise,
                            pos_weight=_small(pos_weight), threshold=threshold,
                            confusion=confusion)
        self.absent = absent
        for k, v in self._acc.state_dict().items():
            self.add_state(k, default=torch.from_numpy(np.array(v, copy=True)),
                           dist_reduce_fx="sum")
        self._state_names = list(self._acc.state_dict())
        self.last_result: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return self._acc.num_classes

    def update(self, preds: Any, target: Any) -> None:
        """Add one batch: ``preds`` are logits, ``target`` class indices or probabilities."""
        acc = self._acc
        acc.reset()
        acc.update(_host_array(preds), _host_array(target))
        # the batch's sums on the host: 0 + sums is exact, so adding them here gives the same
        # bits as lossdiag.Metrics adding them into its own state
        for k, v in acc.state_dict().items():
            cur = getattr(self, k)
            setattr(self, k, cur + torch.from_numpy(v).to(cur.device))

    def compute(self) -> dict[str, Any]:
        """The dict of ``lossdiag.Metrics.compute()`` (NumPy arrays and Python numbers)."""
        st = {k: getattr(self, k).detach().cpu().numpy() for k in self._state_names}
        acc = self._acc
        out = derive(st, num_classes=acc.num_classes, bins=acc.bins, top_k=acc.top_k,
                     label_smoothing=float(acc.options["label_smoothing"]),
                     soft=int(st["soft_batches"]) > 0,
                     binary=acc.binary, absent=self.absent)
        self.last_result = out
        return out

    def scalars(self, result: dict[str, Any] | None = None, *, prefix: str = "",
                per_class: bool = False) -> dict[str, float]:
        """The scalar metrics of ``result`` (default: ``self.compute()``) as plain floats,
        ready for ``LightningModule.log_dict`` (see :func:`lossdiag.monitor.scalars`)."""
        return scalars(self.compute() if result is None else result, prefix=prefix,
                       per_class=per_class)

    def to_metrics(self) -> Metrics:
        """A :class:`lossdiag.Metrics` holding the same state (on the host)."""
        m = Metrics(self._acc.num_classes, axis=self._acc.options["axis"],
                    weight=self._acc.options["weight"],
                    ignore_index=self._acc.options["ignore_index"],
                    label_smoothing=self._acc.options["label_smoothing"], top_k=self._acc.top_k,
                    bins=self._acc.bins, binary=self._acc.binary, imagewise=self._acc.imagewise,
                    confusion=self._acc.confusion, **self._acc.binary_options)
        m.load_state_dict({k: getattr(self, k).detach().cpu().numpy()
                           for k in self._state_names})
        return m


def _small(x: Any) -> Any:
    """A per-class vector (class weights, pos_weight) as a host NumPy array (C numbers)."""
    if type(x).__module__.split(".")[0] == "torch":
        return x.detach().cpu().double().numpy()
    return x


class ClassificationStats(LossdiagStats):
    """:class:`LossdiagStats` for classification: logits ``(N, C)``, or ``(N, L, C)`` sequence
    logits with ``axis=-1`` (token classification, language models).

    >>> import torch
    >>> m = ClassificationStats(num_classes=4, top_k=(1, 2))
    >>> m.update(torch.tensor([[3.0, 0, 0, 0], [0, 0, 2.0, 1.0]]), torch.tensor([0, 3]))
    >>> r = m.compute()
    >>> r["accuracy"], r["top_k_accuracy"][2]
    (0.5, 1.0)
    """


class SegmentationStats(LossdiagStats):
    """:class:`LossdiagStats` for segmentation: logits ``(N, C, H, W)`` (or channels-last with
    ``axis=-1``). ``imagewise=True`` adds the per-image mean IoU / Dice of
    segmentation_models.pytorch ("macro-imagewise")."""
