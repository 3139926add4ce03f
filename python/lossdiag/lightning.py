"""PyTorch Lightning 2.x: live diagnosis of a run as a ``Callback``.

>>> import lightning.pytorch as pl                                       # doctest: +SKIP
>>> from lossdiag.lightning import DiagnosisCallback
>>> cb = DiagnosisCallback(stop_on=("non-finite", "diverging"))
>>> trainer = pl.Trainer(max_epochs=20, callbacks=[cb])                 # doctest: +SKIP
>>> trainer.fit(model, train_loader, val_loader)                        # doctest: +SKIP
>>> cb.monitor.alarms, cb.report_paths["html"]                          # doctest: +SKIP

What the callback reads (nothing has to be changed in the LightningModule):

* per training batch: the loss ``training_step`` returned, the learning rate of the first
  optimizer, and the total gradient norm before clipping (computed in
  ``on_before_optimizer_step``, after AMP unscaling; ``grad_norm=False`` turns it off);
* per epoch: the metrics logged with ``self.log`` (``trainer.callback_metrics``: ``val_*`` at the
  end of validation, the others at the end of the training epoch; ``*_step`` values skipped);
* the statistics of a :mod:`lossdiag.torchmetrics` metric on the module (``stats="val_stats"``,
  or found automatically when the module has one), read before the module's own
  ``on_validation_epoch_end`` resets it.

Alarms are logged through Python logging under ``lightning.pytorch.callbacks.lossdiag`` (rank
zero). With ``stop_on`` codes, an alarm with one of them sets ``trainer.should_stop`` (agreed
across processes), so the run ends after the current batch; Lightning still runs the pending
validation. At the end of ``fit`` (also after an exception) ``report.html``, ``report.json``
and ``history.json`` go into ``log_dir`` (default: ``trainer.log_dir`` / ``lossdiag``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:  # the unified package first, the standalone one as a fallback
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - environments with only pytorch_lightning
    import pytorch_lightning as pl  # type: ignore[no-redef]

import torch

from .history import split_metric_key
from .monitor import AlarmThresholds, Monitor

if TYPE_CHECKING:
    from .diagnosis.report import Finding

__all__ = ["DiagnosisCallback"]

log = logging.getLogger("lightning.pytorch.callbacks.lossdiag")


class DiagnosisCallback(pl.Callback):
    """Feeds a :class:`lossdiag.Monitor` from a Lightning run and reports its alarms live.

    Args:
        stop_on: finding codes that stop training, e.g. ``("non-finite", "diverging")``.
            Off by default.
        num_classes: C, for the end-of-run diagnosis (chance level ln C).
        stats: attribute name of a :mod:`lossdiag.torchmetrics` metric on the LightningModule
            whose ``compute()`` statistics are passed to the monitor each validation epoch;
            ``"auto"`` (default) uses the module's only such metric (or the one whose name
            contains "val"), ``None`` none.
        grad_norm: compute the total gradient norm of every optimizer step (one pass over the
            gradients).
        log_dir: where the reports go (default: ``trainer.log_dir/lossdiag``); ``False`` writes
            nothing.
        thresholds: an :class:`lossdiag.AlarmThresholds`.
        monitor: an existing :class:`lossdiag.Monitor` to feed (its ``stop_on`` is replaced
            when ``stop_on`` is given).

    Attributes:
        monitor: the :class:`lossdiag.Monitor` (``.alarms``, ``.history``, ``.diagnose()``).
        stopped_at: ``(epoch, step)`` where this callback stopped the run, or None.
        report_paths: the files written at the end (``{"html", "json", "history"}``).
    """

    def __init__(self, *, stop_on: Iterable[str] | str = (), num_classes: int | None = None,
                 stats: str | None = "auto", grad_norm: bool = True,
                 log_dir: str | Path | bool | None = None,
                 thresholds: AlarmThresholds | None = None,
                 monitor: Monitor | None = None) -> None:
        super().__init__()
        monitor = Monitor.for_callback(monitor, num_classes=num_classes, stop_on=stop_on,
                                       thresholds=thresholds)
        if stats is not None and not isinstance(stats, str):
            raise TypeError(f"stats: expected an attribute name, 'auto' or None, got {stats!r}")
        if log_dir is True:
            raise TypeError("log_dir: expected a path, None (trainer.log_dir) or False")
        self.monitor = monitor
        self.stats = stats
        self.grad_norm = bool(grad_norm)
        self.log_dir = log_dir
        self.stopped_at: tuple[int, float] | None = None
        self.report_paths: dict[str, Path] = {}
        self._batches = 0
        self._grad: Any = None
        self._pending_stats: dict[str, Any] | None = None
        self._is_zero = True
        self._reported = False
        monitor.add_alarm_callback(self._log_alarm)

    # -- helpers ---------------------------------------------------------------------------------
    def _log_alarm(self, f: Finding) -> None:
        if self._is_zero:
            log.warning("lossdiag alarm: %s", f)

    def _step(self, trainer: pl.Trainer) -> float:
        k = max(int(getattr(trainer, "accumulate_grad_batches", 1) or 1), 1)
        return float(self._batches) if k == 1 else self._batches / k

    @staticmethod
    def _lr(trainer: pl.Trainer) -> float | None:
        try:
            return float(trainer.optimizers[0].param_groups[0]["lr"])
        except (IndexError, KeyError, AttributeError, TypeError, ValueError):
            return None

    def _stats_metric(self, pl_module: pl.LightningModule) -> Any:
        if self.stats is None:
            return None
        try:
            from .torchmetrics import LossdiagStats
        except ImportError:  # pragma: no cover - torchmetrics comes with lightning
            return None
        if self.stats != "auto":
            m = getattr(pl_module, self.stats, None)
            if not isinstance(m, LossdiagStats):
                raise TypeError(f"stats: {type(pl_module).__name__}.{self.stats} is not a "
                                f"lossdiag.torchmetrics metric (got {type(m).__name__})")
            return m
        found = [(n, m) for n, m in pl_module.named_modules() if isinstance(m, LossdiagStats)]
        if len(found) > 1:
            found = [(n, m) for n, m in found if "val" in n.lower()] or found[:0]
        return found[0][1] if len(found) == 1 else None

    def _stop(self, trainer: pl.Trainer, step: float | None = None) -> None:
        if not self.monitor.stop_on or self.stopped_at is not None:
            return
        # every process must take the same decision, or the others wait forever
        stop = trainer.strategy.reduce_boolean_decision(self.monitor.should_stop, all=False)
        if stop:
            trainer.should_stop = True
            self.stopped_at = (trainer.current_epoch,
                               self._step(trainer) - 1 if step is None else step)
            if self._is_zero:
                reason = self.monitor.stop_reason
                log.warning("lossdiag: stopping the run at epoch %d (%s)", trainer.current_epoch,
                            reason.title if reason is not None else "alarm on another process")

    @staticmethod
    def _split(metrics: dict[str, Any], want: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in metrics.items():
            if k.endswith("_step") or k.startswith("lossdiag"):
                continue
            split, name = split_metric_key(k)
            if split != want:
                continue
            if name.endswith("_epoch"):
                name = name[: -len("_epoch")]
            try:
                out[name] = float(v.detach().float().item() if hasattr(v, "detach") else v)
            except (TypeError, ValueError, RuntimeError):
                continue  # a non-scalar logged value
        return out

    # -- hooks -------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._is_zero = bool(trainer.is_global_zero)
        prec = str(getattr(trainer, "precision", ""))
        if prec.startswith("16") and not self.monitor.loss_scaling:
            self.monitor.loss_scaling = True  # float16 AMP: overflowing steps are skipped

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: Any) -> None:
        if not self.grad_norm:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            with torch.no_grad():
                self._grad = torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(g.detach(), dtype=torch.float32) for g in grads]))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and not (hasattr(loss, "numel") and loss.numel() == 1):
            loss = None  # manual optimisation returning something else
        g, self._grad = self._grad, None
        step = self._step(trainer)
        self.monitor.step(step, loss=loss, lr=self._lr(trainer), grad_norm=g,
                          epoch=trainer.current_epoch)
        self._batches += 1
        self._stop(trainer, step)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = self._stats_metric(pl_module)
        if m is not None and getattr(m, "update_called", True):
            self._pending_stats = m.compute()  # before the module resets it (synced in DDP)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        val = self._split(dict(trainer.callback_metrics), "val")
        stats, self._pending_stats = self._pending_stats, None
        if val or stats is not None:
            self.monitor.epoch(trainer.current_epoch, val=val, stats=stats)
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train = self._split(dict(trainer.callback_metrics), "train")
        self.monitor.epoch(trainer.current_epoch, train=train, lr=self._lr(trainer))
        self._stop(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        try:
            self._report(trainer)
        except Exception as exc:  # never mask the original exception
            log.warning("lossdiag: could not write the report after an exception: %s", exc)

    def _report(self, trainer: pl.Trainer) -> None:
        if self._reported or self.log_dir is False:
            return
        self._reported = True
        if self.log_dir is None:
            base = trainer.log_dir  # a collective call: every rank makes it
            out = Path(base if base is not None else trainer.default_root_dir) / "lossdiag"
        else:
            out = Path(self.log_dir)
        if not trainer.is_global_zero:
            return
        self.report_paths = self.monitor.write_report(out)
        d_codes = [a.code for a in self.monitor.alarms]
        log.info("lossdiag: report written to %s (alarms: %s)", self.report_paths["html"],
                 ", ".join(d_codes) or "none")

    def state_dict(self) -> dict[str, Any]:
        """The history so far, so that a resumed run keeps diagnosing the whole run."""
        from .monitor import _JSON_STATS_KEYS

        return {"history": self.monitor.history.to_dict(stats_keys=_JSON_STATS_KEYS),
                "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from .history import History

        old = self.monitor
        h = History.from_dict(state_dict["history"])
        # replaying rebuilds the running statistics (and the alarms already raised, silently)
        self.monitor = Monitor.replay(h, num_classes=old.num_classes, stop_on=old.stop_on,
                                      thresholds=old.thresholds, loss_scaling=old.loss_scaling,
                                      step_every=old.step_every)
        self.monitor.stop_reason = None  # a resumed run was not stopped by what came before
        self.monitor.add_alarm_callback(self._log_alarm)
        self._batches = int(state_dict.get("batches", 0))
