"""History: logging, serialisation, and every reader on real-format sample files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from lossdiag.history import (
    History,
    HistoryFormatError,
    metric_direction,
    split_metric_key,
)

LOGS = Path(__file__).parent / "fixtures" / "logs"


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize("name,expected", [
    ("val_acc", ("val", "accuracy")), ("acc", ("train", "accuracy")),
    ("val_loss", ("val", "loss")), ("eval_loss", ("val", "loss")),
    ("valid_mIoU", ("val", "mean_iou")), ("train/loss", ("train", "loss")),
    ("train_loss_epoch", ("train", "loss_epoch")), ("train_acc_step", ("train", "accuracy_step")),
    ("lr-Adam", ("lr", "lr")), ("learning_rate", ("lr", "lr")), ("lr-AdamW/pg1", ("lr", "lr")),
    ("eval_runtime", ("other", "runtime")), ("epoch", ("other", "epoch")),
    ("loss_val", ("val", "loss")), ("validation/dice", ("val", "dice")),
])
def test_split_metric_key(name, expected):
    assert split_metric_key(name) == expected


@pytest.mark.parametrize("name,direction", [
    ("accuracy", "max"), ("val_mIoU", "max"), ("iou", "max"), ("dice_coef", "max"),
    ("f1", "max"), ("macro_f1", "max"), ("auc", "max"), ("roc_auc", "max"),
    ("top5", "max"), ("balanced_accuracy", "max"), ("loss", "min"), ("nll", "min"),
    ("val_loss", "min"), ("mse", "min"), ("perplexity", "min"), ("error_rate", "min"),
    ("grad_norm", None), ("foo", None),
])
def test_metric_direction(name, direction):
    assert metric_direction(name) == direction


# ------------------------------------------------------------------------------ logging


def test_log_merges_same_epoch_and_keeps_missing_apart_from_nan():
    h = History()
    h.log(0, train={"loss": 1.0})
    h.log(0, val={"loss": 1.2, "acc": 0.4}, lr=0.1)
    h.log(1, train={"loss": float("nan")})
    assert len(h) == 2
    assert h.val["accuracy"][0] == 0.4
    _, v, present = h.column("train/loss")
    assert present.tolist() == [True, True] and math.isnan(v[1])
    _, v, present = h.column("val/loss")
    assert present.tolist() == [True, False]  # not logged at epoch 1: missing, not NaN
    assert h.lr.tolist()[0] == 0.1 and math.isnan(h.lr[1])


def test_log_rejects_bad_input():
    h = History()
    h.log(3, train={"loss": 1.0})
    with pytest.raises(ValueError, match="epoch must not decrease"):
        h.log(2, train={"loss": 1.0})
    with pytest.raises(ValueError, match="finite"):
        h.log(float("nan"), train={"loss": 1.0})
    with pytest.raises(TypeError, match=r"train\['loss'\]"):
        h.log(4, train={"loss": "abc"})
    with pytest.raises(TypeError, match="train must be a dict"):
        h.log(4, train=[1.0])
    with pytest.raises(TypeError, match="stats"):
        h.log(4, stats=[1, 2])
    with pytest.raises(ValueError, match="num_classes"):
        History(num_classes=1)
    with pytest.raises(TypeError, match="num_classes"):
        History(num_classes="10")


def test_log_step_and_numpy_scalars():
    h = History()
    for s in range(5):
        h.log_step(s, train={"loss": np.float32(2.0 - 0.1 * s)}, lr=np.float64(0.01), epoch=0)
    assert h.has_steps and h.steps.tolist() == [0, 1, 2, 3, 4]
    assert h.step_train["loss"][-1] == pytest.approx(1.6)
    assert h.step_epochs.tolist() == [0, 0, 0, 0, 0]
    assert len(h) == 0


def test_json_roundtrip_with_statistics(tmp_path):
    st = {"loss": 0.5, "accuracy": 0.8, "top_k_accuracy": {1: 0.8, 5: 0.99},
          "recall": np.array([0.9, 0.5, np.nan]), "confusion": np.array([[3, 1], [0, 4]]),
          "reliability": {"bin_edges": np.linspace(0, 1, 3), "count": np.array([2, 5])},
          "num_classes": 3}
    h = History(num_classes=3, meta={"batch_size": 32})
    h.log(0, train={"loss": 1.0}, val={"loss": 1.1}, lr=0.1, stats=st)
    h.log(1, train={"loss": float("inf")})
    h.log_step(10, train={"loss": 0.9})
    path = tmp_path / "h.json"
    h.to_json(path)
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    g = History.load(path)
    assert g.num_classes == 3 and g.meta["batch_size"] == 32
    assert g.train["loss"][1] == math.inf
    assert g.column("val/loss")[2].tolist() == [True, False]
    s = g.stats[0]
    assert s["top_k_accuracy"] == {1: 0.8, 5: 0.99}
    assert np.isnan(s["recall"][2]) and s["confusion"].dtype.kind == "i"
    assert g.stats[1] is None
    assert g.step_train["loss"].tolist() == [0.9]
    # from_path recognises the own format too
    assert History.from_path(path).train["loss"][0] == 1.0


def test_to_dict_trims_statistics_and_rounds():
    h = History()
    h.log(0, train={"loss": 1.23456789}, stats={"ece": 0.123456, "conf_hist": np.arange(3)})
    d = h.to_dict(stats_keys=["ece"], digits=3)
    assert d["epochs"]["columns"]["train/loss"] == [1.23]
    assert d["stats"]["0"] == {"ece": 0.123}


# ------------------------------------------------------------------------------ readers


def test_keras_csvlogger_new_names():
    h = History.from_path(LOGS / "keras_csvlogger.csv")
    assert h.meta["format"] == "keras-csv"
    assert sorted(h.train) == ["accuracy", "loss"] and sorted(h.val) == ["accuracy", "loss"]
    assert h.epochs.tolist() == list(range(12))
    assert h.lr[0] == pytest.approx(1e-3)
    assert h.train["loss"][0] == pytest.approx(2.150012301533575, rel=1e-12)


def test_keras_csvlogger_old_names():
    h = History.from_path(LOGS / "keras_csvlogger_old.csv")
    assert "accuracy" in h.train and "accuracy" in h.val  # acc / val_acc
    assert h.lr.tolist() == [0.01] * 12
    new = History.from_path(LOGS / "keras_csvlogger.csv")
    np.testing.assert_allclose(h.val["loss"], new.val["loss"], atol=1e-6)


def test_keras_csvlogger_nan_loss_is_kept_as_logged_nan():
    h = History.from_path(LOGS / "keras_csvlogger_nan.csv")
    x, v, present = h.column("train/loss")
    assert present.all() and np.isnan(v[4:]).all()


def test_keras_history_object_and_dict():
    class FakeKerasHistory:  # what model.fit returns: .history dict and .epoch list
        history = {"loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.95],
                   "sparse_categorical_accuracy": [0.5, 0.6, 0.7], "lr": [0.1, 0.1, 0.01]}
        epoch = [0, 1, 2]

    h = History.from_keras(FakeKerasHistory())
    assert h.train["accuracy"].tolist() == [0.5, 0.6, 0.7]
    assert h.lr.tolist() == [0.1, 0.1, 0.01]
    h2 = History.from_path(LOGS / "keras_history.json")
    assert sorted(h2.val) == ["accuracy", "loss"] and len(h2) == 12
    with pytest.raises(TypeError, match="keras History"):
        History.from_keras([1, 2, 3])


def test_lightning_metrics_csv():
    h = History.from_path(LOGS / "lightning_metrics.csv")
    assert h.meta["format"] == "lightning-csv"
    assert len(h) == 8 and h.epochs.tolist() == list(range(8))
    # epoch-level values come from the *_epoch columns, not from the step means
    assert h.train["loss"][0] == pytest.approx(2.2)
    assert h.val["loss"][0] == pytest.approx(2.15) and h.val["accuracy"][0] == pytest.approx(0.3)
    # step rows: train_loss_step, with lr-Adam from LearningRateMonitor
    assert h.has_steps and len(h.steps) == 19 and h.steps[0] == 49
    assert "loss" in h.step_train and not np.isnan(h.step_lr[0])
    assert h.lr is not None and h.lr[0] < 1e-3


def test_lightning_like_csv_without_epoch_columns(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text("epoch,step,train_loss,val_loss\n0,9,1.0,\n0,19,0.9,\n0,19,,0.95\n"
                 "1,29,0.8,\n1,39,0.7,\n1,39,,0.85\n")
    h = History.from_path(tmp_path)  # a directory holding metrics.csv
    assert h.train["loss"].tolist() == pytest.approx([0.95, 0.75])  # per-epoch step means
    assert h.val["loss"].tolist() == pytest.approx([0.95, 0.85])


def test_hf_trainer_state():
    h = History.from_path(LOGS / "hf_trainer_state.json")
    assert h.meta["format"] == "hf-trainer-state"
    assert h.epochs.tolist() == [1.0, 2.0, 3.0]
    assert sorted(h.val) == ["accuracy", "f1", "loss"]
    assert "runtime" not in h.val and "samples_per_second" not in "".join(h.keys())
    assert len(h.steps) == 12 and h.step_lr is not None
    steps = h.step_train["loss"]
    assert h.train["loss"][0] == pytest.approx(steps[:4].mean())


def test_hf_checkpoint_directory(tmp_path):
    for n in (40, 120, 80):
        d = tmp_path / f"checkpoint-{n}"
        d.mkdir()
        shutil.copy(LOGS / "hf_trainer_state.json", d / "trainer_state.json")
    (tmp_path / "checkpoint-120" / "trainer_state.json").write_text(
        json.dumps({"log_history": [{"epoch": 1.0, "eval_loss": 0.5, "step": 10}]}))
    h = History.from_path(tmp_path)
    assert "checkpoint-120" in h.source


def test_plain_csv_with_mapping_and_without():
    p = LOGS / "plain_custom.csv"
    with pytest.raises(HistoryFormatError, match=r"plain_custom\.csv.*no recognisable metric"):
        History.from_path(p)
    h = History.from_path(p, mapping={"epoch": "ep", "train/loss": "trn", "val/loss": "vl",
                                      "val/acc": "va", "lr": "LR"})
    assert sorted(h.val) == ["accuracy", "loss"] and h.lr.tolist() == [0.01] * 12
    with pytest.raises(HistoryFormatError, match="'nope'"):
        History.from_csv(p, mapping={"val/loss": "nope"})
    with pytest.raises(ValueError, match="mapping key"):
        History.from_csv(p, mapping={"validation": "vl"})


def test_plain_csv_percent_and_nan_columns():
    h = History.from_path(LOGS / "plain_percent.csv")
    assert h.val["accuracy"].max() > 1  # stored as logged; the diagnosis rescales
    assert np.isnan(h.val["f1"]).all()


def test_plain_json_records():
    h = History.from_path(LOGS / "plain_records.json")
    assert sorted(h.val) == ["dice", "loss"] and len(h) == 12


def test_step_only_plain_csv(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,loss\n" + "".join(f"{i},{2 - i / 100}\n" for i in range(50)))
    h = History.from_path(p)
    assert len(h) == 0 and len(h.steps) == 50


def test_tensorboard_keras_layout():
    pytest.importorskip("tensorboard")
    h = History.from_path(LOGS / "tensorboard_keras")
    assert sorted(h.train) == ["accuracy", "loss"] and sorted(h.val) == ["accuracy", "loss"]
    assert len(h) == 10 and h.lr is not None
    assert h.val["loss"][0] == pytest.approx(1.7, rel=1e-6)


@pytest.mark.parametrize("name,match", [
    ("malformed_empty.csv", "file is empty"),
    ("malformed_header_only.csv", "header but no data rows"),
    ("malformed_ragged.csv", "line 3 has 2 fields"),
    ("malformed_truncated.json", "invalid JSON"),
    ("malformed_hf_state.json", "no training or evaluation entries"),
    ("malformed_no_metrics.csv", "no recognisable metric"),
    ("malformed_binary.bin", "not UTF-8"),
])
def test_malformed_files_name_the_file_and_expectation(name, match):
    with pytest.raises(HistoryFormatError, match=match) as info:
        History.from_path(LOGS / name)
    assert name in str(info.value) and "expected" in str(info.value)


def test_text_cells_are_missing_and_text_columns_ignored_with_a_note(tmp_path):
    h = History.from_path(LOGS / "malformed_text.csv")
    assert h.train["loss"][0] == 1.2 and np.isnan(h.train["loss"][1])
    assert any("'abc'" in n and "missing" in n for n in h.meta["notes"])
    p = tmp_path / "run.csv"
    p.write_text("epoch,time,loss,val_loss\n0,2024-01-01 10:00,1.0,1.1\n1,2024-01-01 10:05,0.8,"
                 "0.9\n2,2024-01-01 10:09,0.7,0.85\n")
    h = History.from_path(p)
    assert h.keys() == ["train/loss", "val/loss"]
    assert any("'time' holds text" in n for n in h.meta["notes"])


def test_missing_path_and_unknown_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        History.from_path(tmp_path / "nope.csv")
    with pytest.raises(HistoryFormatError, match="no training log found"):
        History.from_path(tmp_path)
    with pytest.raises(HistoryFormatError, match="lossdiag history"):
        History.from_dict({"format": "other"})


# ------------------------------------------------------------------ readers of real-world logs


def test_hf_evaluations_are_all_kept_and_grad_norm_is_read(tmp_path):
    log = []
    for s in range(10, 460, 10):
        log.append({"step": s, "epoch": round(s / 150, 2), "loss": 1.0 / (1 + s / 100),
                    "learning_rate": 1e-5, "grad_norm": 1.0})
        if s % 30 == 0:  # evaluations that do not line up with any epoch boundary
            log.append({"step": s, "epoch": round(s / 150, 2), "eval_loss": 0.5 + s / 1e4,
                        "eval_accuracy": 0.8})
    p = tmp_path / "trainer_state.json"
    p.write_text(json.dumps({"log_history": log, "global_step": 450, "max_steps": 900}))
    h = History.from_path(p)
    assert int(np.isfinite(h.val["loss"]).sum()) == 15  # every evaluation, none merged
    assert "grad_norm" in h.keys("step") and h.meta["max_steps"] == 900


def test_hf_nan_hidden_by_the_loss_filter_shows_in_grad_norm(tmp_path):
    # logging_nan_inf_filter=True (the default) drops NaN losses from the logged mean, but
    # the gradient norm of the failing steps is logged as NaN
    log = [{"step": s, "epoch": s / 100, "loss": 0.5, "grad_norm": 1.0 if s < 60 else
            float("nan"), "learning_rate": 1e-5} for s in range(10, 110, 10)]
    p = tmp_path / "trainer_state.json"
    p.write_text(json.dumps({"log_history": log}).replace("NaN", "NaN"))
    from lossdiag.diagnosis import diagnose

    f = diagnose(History.from_path(p)).get("non-finite")
    assert f is not None and f.evidence["column"] == "grad_norm" and f.start == 60


def test_camel_case_batch_suffix_and_unprefixed_validation_scores(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("epoch,trainLoss,valLoss,acc,diceScore\n" + "".join(
        f"{e},{1 - 0.1 * e},{1.1 - 0.08 * e},{0.5 + 0.04 * e},{0.3 + 0.05 * e}\n"
        for e in range(6)))
    h = History.from_path(p)
    assert set(h.keys()) == {"train/loss", "val/loss", "val/accuracy", "val/dice_score"}
    assert any("read as a validation metric" in n for n in h.meta["notes"])
    p = tmp_path / "metrics.csv"
    p.write_text("epoch,step,train_loss_batch\n" + "".join(
        f"{s // 5},{s},{2.0 - 0.01 * s}\n" for s in range(30)))
    h = History.from_path(p)
    assert "train/loss" in h.keys("step")


def test_a_validation_loss_without_loss_in_its_name_is_recognised(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text("epoch,loss,accuracy,validation_epoch_average\n" + "".join(
        f"{e},{0.5 * 0.8 ** e},{0.8 + 0.01 * e},{0.45 * 0.85 ** e + 0.02}\n" for e in range(8)))
    from lossdiag.diagnosis import diagnose

    d = diagnose(History.from_path(p))
    assert d._view.val_loss is not None and d._view.val_loss.key == "val/epoch_average"
    assert any("read as the validation loss" in n for n in d.notes)
