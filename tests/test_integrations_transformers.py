"""lossdiag.transformers on a real Hugging Face Trainer run (CPU, a tiny BERT built from a config).

A 2-layer BertForSequenceClassification (hidden size 32) on an in-memory token task, trained
with SGD + momentum: with a sane learning rate the run ends without an alarm; with one 100x too
high the callback stops it in the first epoch; weights that turn NaN are caught at the step,
although the Trainer's logging_nan_inf_filter hides them from the logged loss.
"""

from __future__ import annotations

import json
import math
import warnings

import lossdiag
import numpy as np
import pytest
import torch
from lossdiag.transformers import ComputeMetrics, DiagnosisCallback
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    EvalPrediction,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

# The frameworks are in the `test` extra: these tests run (never skip) in CI.


@pytest.fixture(autouse=True)
def _quiet_single_thread():
    # tiny models: threads only contend on a shared CI machine (and results stay deterministic)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    hf_logging.set_verbosity(verbosity)
    torch.set_num_threads(n)


class _Tokens(torch.utils.data.Dataset):
    """Class 1 sequences are made of tokens 4-6, class 0 of tokens 10-59 ([CLS] = 2 first)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randint(10, 60, (n, 12), generator=g)
        ones = torch.randint(4, 7, (n, 11), generator=g)
        x[:, 1:] = torch.where(self.y[:, None] == 1, ones, x[:, 1:])
        x[:, 0] = 2
        self.x = x

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def _train(tmp_path, lr: float, *, epochs: int = 3, extra_callbacks=(), **cb_kwargs):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=16, num_labels=2,
                     initializer_range=0.2, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(cfg)
    metrics = ComputeMetrics(num_classes=2)
    cb = DiagnosisCallback(metrics=metrics, **cb_kwargs)
    args = TrainingArguments(
        str(tmp_path / "out"), per_device_train_batch_size=16, per_device_eval_batch_size=32,
        num_train_epochs=epochs, learning_rate=lr, optim="sgd", optim_args="momentum=0.9",
        lr_scheduler_type="constant", logging_steps=1, eval_strategy="epoch",
        save_strategy="no", report_to="none", use_cpu=True, seed=0, data_seed=0,
        batch_eval_metrics=True, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=_Tokens(192, 0),
                      eval_dataset=_Tokens(64, 1), compute_metrics=metrics,
                      callbacks=[cb, *extra_callbacks])
    trainer.train()
    return trainer, cb


def test_healthy_run_has_no_alarm(tmp_path):
    trainer, cb = _train(tmp_path, lr=0.1, stop_on=("non-finite", "diverging"))
    mon = cb.monitor
    assert mon.alarms == [] and cb.stopped_at is None
    assert trainer.state.global_step == 36
    h = mon.history
    # every optimisation step (from the forward hook), with grad_norm and lr from the logs
    assert h.steps.tolist() == list(range(1, 37))
    assert np.isfinite(h.column("train/grad_norm", "step")[1]).all()
    assert h.step_lr[0] == pytest.approx(0.1)
    # one record per evaluation, with the Trainer's eval_loss and ComputeMetrics' statistics
    evals = [r for r in trainer.state.log_history if "eval_loss" in r]
    assert h.val["loss"].tolist() == pytest.approx([r["eval_loss"] for r in evals])
    assert h.val["accuracy"][-1] == 1.0
    assert all(s is not None and s["confusion"].sum() == 64 for s in h.stats)
    assert mon.num_classes == 2  # from model.config.num_labels
    rep = json.loads(cb.report_paths["json"].read_text())
    assert cb.report_paths["html"] == tmp_path / "out" / "lossdiag" / "report.html"
    assert [f for f in rep["findings"] if f["severity"] != "info"] == []


def test_lr_100x_too_high_stops_in_the_first_epoch(tmp_path):
    trainer, cb = _train(tmp_path, lr=10.0, epochs=5, stop_on=("non-finite", "diverging"))
    mon = cb.monitor
    first = mon.stop_reason
    assert first is not None and first.code in ("non-finite", "diverging")
    assert first.severity == "error"
    epoch, step = cb.stopped_at
    assert step == first.end == trainer.state.global_step == mon.history.steps[-1]
    assert epoch < 1.0  # the epoch where the loss broke: the first one (12 steps)
    rep = json.loads(cb.report_paths["json"].read_text())
    assert first.code in [f["code"] for f in rep["findings"]]
    assert first.code in cb.report_paths["html"].read_text()


class _PoisonWeights(TrainerCallback):
    """Turns the classifier's weights into NaN after step 4: every later loss is NaN."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 4:
            with torch.no_grad():
                model.classifier.weight.fill_(float("nan"))


@pytest.mark.parametrize("watch_loss", [True, False])
def test_nan_is_caught_through_logging_nan_inf_filter(tmp_path, watch_loss):
    trainer, cb = _train(tmp_path, lr=0.1, epochs=1, extra_callbacks=[_PoisonWeights()],
                         watch_loss=watch_loss, log_dir=False)
    logged = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(logged) == 12 and all(math.isfinite(v) for v in logged)  # hidden by the filter
    nonfinite = [a for a in cb.monitor.alarms if a.code == "non-finite"]
    assert len(nonfinite) == 1  # once per episode, although every later step is NaN
    a = nonfinite[0]
    assert a.start == 5.0 and a.severity == "error"
    # the forward hook sees the loss itself; without it the logged grad_norm gives it away
    assert a.series == (["train/loss"] if watch_loss else ["train/grad_norm"])


def test_compute_metrics_streams_batches_like_metrics(tmp_path):
    rng = np.random.default_rng(0)
    cm = ComputeMetrics(num_classes=3, per_class=True)
    ref = lossdiag.Metrics(3, axis=-1)
    batches = [(rng.normal(size=(n, 7, 3)).astype(np.float32),
                rng.integers(0, 3, size=(n, 7))) for n in (4, 5, 3)]
    batches[1][1][0, :3] = -100  # padded tokens are ignored, as in the Trainer
    for i, (logits, labels) in enumerate(batches):
        t = torch.from_numpy(logits).requires_grad_(i == 0)  # tensors, even ones with grad
        out = cm(EvalPrediction(predictions=(t, None), label_ids=torch.from_numpy(labels)),
                 compute_result=i == len(batches) - 1)
        ref.update(logits, labels)
        if i < len(batches) - 1:
            assert out == {}
    expect = ref.compute()
    assert out["accuracy"] == expect["accuracy"] and out["mean_iou"] == expect["mean_iou"]
    assert out["cross_entropy"] == expect["loss"] and "loss" not in out  # eval_loss is kept
    assert out["iou_2"] == expect["iou"][2]
    assert cm.last_stats["count"] == expect["count"] == 12 * 7 - 3
    # reset after each evaluation; bfloat16 logits are read (upcast to float32)
    logits = torch.from_numpy(batches[0][0]).to(torch.bfloat16)
    out2 = cm(EvalPrediction(predictions=logits, label_ids=torch.from_numpy(batches[0][1])))
    assert cm.last_stats["count"] == 4 * 7 and math.isfinite(out2["cross_entropy"])
    with pytest.raises(ValueError, match="eval_pred"):
        cm(EvalPrediction(predictions=None, label_ids=None))


def test_compute_metrics_keys_in_a_trainer_evaluation(tmp_path):
    trainer, cb = _train(tmp_path, lr=0.1, epochs=1, log_dir=False)
    ev = trainer.evaluate()
    assert {"eval_loss", "eval_accuracy", "eval_cross_entropy", "eval_mean_iou",
            "eval_ece", "eval_balanced_accuracy"} <= set(ev)
    # the Trainer's own eval_loss is kept; the cross-entropy of the logits is the same number
    assert ev["eval_cross_entropy"] == pytest.approx(ev["eval_loss"], rel=1e-4, abs=1e-6)
    assert all(isinstance(v, float) for v in ev.values())


def test_docstring_examples():
    import doctest

    import lossdiag.transformers

    res = doctest.testmod(lossdiag.transformers,
                          optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0
