"""lossdiag.Monitor: live alarms, replayed on the 40 labelled real training logs and on curves
built to show each alarm (and its absence)."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import lossdiag
import numpy as np
import pytest
from lossdiag.history import History
from lossdiag.monitor import AlarmThresholds, Monitor, is_loss_name, scalars

REAL = Path(__file__).parent / "fixtures" / "real_logs" / "dev"
LABELS = json.loads((REAL / "labels.json").read_text())["files"]


def _alarms(mon: Monitor) -> list[tuple[str, str | None, float]]:
    return [(a.code, a.cause, a.start) for a in mon.alarms]


# ------------------------------------------------------------------------------------------------
# the real logs
# ------------------------------------------------------------------------------------------------


def _first_nonfinite(h: History) -> float | None:
    """Where a loss-like column is first NaN/inf, at the level the Monitor sees it first."""
    firsts = []
    for level in ("epoch", "step"):
        for k in h.keys(level):
            if k == "lr" or not is_loss_name(k.split("/", 1)[1]):
                continue
            x, v, p = h.column(k, level)
            bad = p & ~np.isfinite(v)
            if bad.any():
                firsts.append(float(x[np.argmax(bad)]))
    return min(firsts) if firsts else None


@pytest.mark.parametrize("name", sorted(LABELS))
def test_replay_of_real_logs(name):
    """No alarm on a healthy run; on the others only codes the labels allow; the NaN and the
    exploding runs raise theirs."""
    lab = LABELS[name]
    h = History.from_path(REAL / name)
    mon = Monitor.replay(h, num_classes=lab["num_classes"])
    codes = {a.code for a in mon.alarms}
    if not lab["expected"]:
        assert mon.alarms == [], f"false alarm on a healthy run: {_alarms(mon)}"
    assert codes <= set(lab["expected"]) | set(lab["optional"]), _alarms(mon)
    if "non-finite" in lab["expected"]:
        nf = [a for a in mon.alarms if a.code == "non-finite"]
        assert len(nf) == 1  # once, although every later value is NaN in most of these
        assert nf[0].start == _first_nonfinite(h) and nf[0].severity == "error"


def test_real_logs_that_must_raise():
    # the brief's examples: NaN at once (60, 65, 71, 75) and the steps that explode (68)
    expect = {"60_wikitext2-rnn-relu-nan.csv": ("non-finite", 1.0),
              "65_relernn-late-nan.csv": ("non-finite", 309.0),
              "71_bark-beetle-seg-nan.csv": ("non-finite", 0.0),
              "75_textgcn-val-nan.csv": ("non-finite", 61.0),
              "68_frcnn-steps-explode.csv": ("diverging", 408.0)}
    for name, (code, start) in expect.items():
        mon = Monitor.replay(History.from_path(REAL / name))
        assert (mon.alarms[0].code, mon.alarms[0].start) == (code, start), name
    # 68: 0.144 at step 408, then 2.5e4, 7.6e4, 2.9e4: an explosion, raised at the 4th value
    a = Monitor.replay(History.from_path(REAL / "68_frcnn-steps-explode.csv")).alarms[0]
    assert a.cause == "lr-too-high" and a.end == 411.0 and a.unit == "step"
    assert a.evidence["peak_rise"] > 1e5


@pytest.mark.parametrize("name", sorted(n for n in LABELS if n.endswith(".json")))
def test_real_gradient_norms_raise_no_alarm(name):
    """The logged grad_norm of the Hugging Face runs (heavy-tailed: 0.004 to 108 within a few
    steps in 47) are fed with the losses: no gradient alarm."""
    log = json.loads((REAL / name).read_text())["log_history"]
    mon = Monitor()
    for r in log:
        if "loss" in r or "grad_norm" in r:
            mon.step(r["step"], loss=r.get("loss"), lr=r.get("learning_rate"),
                     grad_norm=r.get("grad_norm"), epoch=r.get("epoch"))
    assert [a for a in mon.alarms if a.cause == "gradient-explosion"] == []


@pytest.mark.parametrize("loosen", [
    {"spike_sigmas": 4.0}, {"spike_min_ratio": 4.0}, {"spike_vs_start": 0.5},
    {"diverge_rise": 1.5}, {"diverge_sigmas": 2.0}, {"diverge_consistency": 0.4},
    {"smooth_steps": 5}, {"grad_ratio": 5.0}, {"grad_sigmas": 2.0}, {"explode_ratio": 5.0}])
def test_defaults_have_margin_on_the_real_logs(loosen):
    """Each threshold loosened on its own still raises nothing on the healthy runs: the
    defaults are not tuned to the edge of the collection."""
    th = replace(AlarmThresholds(), **loosen)
    for name, lab in LABELS.items():
        if lab["expected"]:
            continue
        mon = Monitor.replay(History.from_path(REAL / name), thresholds=th)
        assert mon.alarms == [], (name, _alarms(mon))


# ------------------------------------------------------------------------------------------------
# non-finite
# ------------------------------------------------------------------------------------------------


def test_nan_loss_raises_at_once_with_the_step():
    mon = Monitor(stop_on=("non-finite",))
    losses = [2.3, 2.0, 1.8, 1.7, 1.6, 1.55, math.nan, math.nan]
    fired = []
    for i, v in enumerate(losses):
        fired.append(mon.step(100 + i, loss=v, lr=0.01))
        if mon.should_stop:
            break
    assert [len(f) for f in fired] == [0] * 6 + [1]
    a = mon.stop_reason
    assert (a.code, a.severity, a.start, a.end, a.unit) == ("non-finite", "error", 106.0,
                                                            106.0, "step")
    assert a.cause == "sudden" and a.title == "loss became NaN"
    assert a.evidence["last_finite"] == 1.55 and a.evidence["last_finite_at"] == 105.0
    assert "step 106" in a.explanation and "1.55" in a.explanation
    assert a.recommendations and a.recommendations[-1].magnitude.startswith("~3x smaller")
    assert "0.01" in a.recommendations[-1].magnitude


def test_inf_after_growth_is_an_overflow_after_divergence():
    mon = Monitor()
    for e, v in enumerate([2.0, 1.5, 1.2, 1.6, 3.5, 9.0, math.inf]):
        mon.epoch(e, train={"loss": v}, lr=0.5)
    nf = [a for a in mon.alarms if a.code == "non-finite"]
    assert len(nf) == 1 and nf[0].title == "loss became +inf" and nf[0].start == 6.0
    assert nf[0].cause == "overflow-after-divergence"
    assert nf[0].evidence["rise_before"] == pytest.approx(9.0 / 1.2)
    assert nf[0].recommendations[0].magnitude == "~10x smaller: from 0.5 to about 0.05"


def test_one_alarm_per_episode():
    mon = Monitor()
    seq = [1.0, 0.9, math.nan, math.nan, math.nan, 0.8, 0.7, 0.6, math.nan, 0.5]
    for i, v in enumerate(seq):
        mon.step(i, loss=v)
    # NaN at 2-4 is one episode; three finite values re-arm; the NaN at 8 is a new one
    assert [(a.code, a.start) for a in mon.alarms] == [("non-finite", 2.0),
                                                       ("non-finite", 8.0)]
    mon = Monitor(thresholds=replace(AlarmThresholds(), rearm_points=10))
    for i, v in enumerate(seq):
        mon.step(i, loss=v)
    assert len(mon.alarms) == 1


def test_nonfinite_validation_loss_and_other_losses():
    mon = Monitor()
    mon.epoch(0, train={"loss": 1.0, "accuracy": 0.5}, val={"nll": math.nan, "ece": math.nan})
    (a,) = mon.alarms  # 'ece' is not a loss: NaN there is not an alarm
    assert a.evidence["column"] == "val/nll" and a.unit == "epoch" and a.start == 0.0


def test_nonfinite_gradient_norm_and_loss_scaling():
    mon = Monitor()
    for i in range(10):
        mon.step(i, loss=1.0 / (i + 1), grad_norm=1.0)
    mon.step(10, loss=0.09, grad_norm=math.nan)
    (a,) = mon.alarms
    assert a.code == "non-finite" and a.series == ["train/grad_norm"] and a.start == 10.0
    # under float16 loss scaling a few overflowing steps are normal: 20 in a row are not
    mon = Monitor(loss_scaling=True)
    for i in range(40):
        mon.step(i, loss=1.0, grad_norm=math.inf if 5 <= i < 12 or i >= 15 else 1.0)
    (a,) = mon.alarms
    assert a.start == 15.0 and a.end == 34.0 and a.evidence["steps_in_a_row"] == 20


# ------------------------------------------------------------------------------------------------
# divergence, spikes, gradient explosion
# ------------------------------------------------------------------------------------------------


def test_divergence_per_epoch():
    mon = Monitor(stop_on="diverging")
    losses = [2.3, 1.8, 1.5, 1.3, 1.2, 1.25, 1.5, 2.0, 2.9, 4.3, 6.5]
    for e, v in enumerate(losses):
        mon.epoch(e, train={"loss": v}, val={"loss": 1.1 * v}, lr=0.3)
        if mon.should_stop:
            break
    (a,) = mon.alarms
    assert (a.code, a.cause, a.severity, a.unit) == ("diverging", "lr-too-high", "error",
                                                     "epoch")
    # the minimum at epoch 4, raised at epoch 9: the 3-epoch median has doubled since
    assert a.start == 4.0 and a.end == 9.0 and e == 9
    assert a.evidence["loss_at_start"] == 1.2 and a.evidence["rise"] >= 2.0
    assert a.evidence["consistency"] == 1.0
    assert a.recommendations[0].action == "Lower the learning rate"
    assert "from 0.3 to about 0.03" in a.recommendations[0].magnitude


def test_divergence_of_a_noisy_per_step_loss():
    rng = np.random.default_rng(1)
    x = np.arange(800)
    y = 2.3 * np.exp(-x / 150) + 0.2
    y[500:] = y[500] * np.exp(0.01 * (x[500:] - 500))  # +1% per step from step 500
    y *= np.exp(0.3 * rng.standard_normal(800))  # 30% batch-to-batch noise
    mon = Monitor()
    for i in range(800):
        mon.step(i, loss=y[i])
    (a,) = mon.alarms
    assert a.cause == "lr-too-high" and 480 <= a.start <= 510 and a.end <= 600


@pytest.mark.parametrize("seed", range(4))
def test_no_alarm_on_noisy_healthy_curves(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    x = np.arange(n)
    # heavy-tailed batch losses of a converging run, heavy-tailed bimodal gradient norms
    y = (2.3 * np.exp(-x / 400) + 0.02) * np.exp(0.5 * rng.standard_normal(n))
    g = np.where(rng.random(n) < 0.2, 10.0, 0.02) * np.exp(0.5 * rng.standard_normal(n))
    mon = Monitor()
    for i in range(n):
        mon.step(i, loss=y[i], grad_norm=g[i], lr=1e-3)
    for e in range(30):
        mon.epoch(e, train={"loss": float(np.mean(y[e * 100:(e + 1) * 100]))},
                  val={"loss": float(np.mean(y[e * 100:(e + 1) * 100])) * 1.1})
    assert mon.alarms == []


def test_explosion_from_the_first_steps():
    mon = Monitor()
    for i, v in enumerate([0.85, 22.4, 2013.0, 867.0, 157.0]):
        mon.step(i, loss=v, lr=5.0)
    (a,) = mon.alarms  # 3 values in a row 10x above the first: no need to wait for a warm-up
    assert a.cause == "lr-too-high" and a.end == 3.0 and a.evidence["model"] == "explosion"
    assert a.recommendations[0].magnitude.startswith("~100x smaller")  # 2000x in 2 steps
    assert a.recommendations[-1].action == "Restart the run"


def test_validation_loss_rising_alone_is_overfitting_not_divergence():
    mon = Monitor()
    for e in range(20):
        mon.epoch(e, train={"loss": 1.0 / (e + 1)}, val={"loss": 0.5 * 1.3**e})
    assert mon.alarms == []
    # without a training loss, a validation loss that triples is judged
    mon = Monitor()
    for e in range(20):
        mon.epoch(e, val={"loss": 0.5 * 1.3**e})
    assert [a.cause for a in mon.alarms] == ["lr-too-high"]


def test_loss_spike():
    rng = np.random.default_rng(2)
    y = (2.3 * np.exp(-np.arange(800) / 150) + 0.2) * np.exp(0.1 * rng.standard_normal(800))
    y[600] = 5.0
    y[700] = 1.0  # 4x its level but below the starting level: not an alarm
    mon = Monitor()
    for i, v in enumerate(y):
        mon.step(i, loss=v)
    (a,) = mon.alarms
    assert (a.code, a.cause, a.severity, a.start) == ("diverging", "loss-spike", "warning",
                                                      600.0)
    ev = a.evidence
    assert ev["value"] == 5.0 and ev["ratio"] >= 5 and ev["sigmas"] >= 6
    assert ev["start_level"] > 1.0 and 0.2 < ev["running_level"] < 0.3


def test_gradient_explosion():
    rng = np.random.default_rng(3)
    g = np.exp(0.5 * rng.standard_normal(600))
    g[400:] *= 30  # a jump that stays
    mon = Monitor()
    for i, v in enumerate(g):
        mon.step(i, grad_norm=v, lr=0.1)
    (a,) = mon.alarms
    assert (a.code, a.cause, a.start, a.end) == ("diverging", "gradient-explosion", 400.0,
                                                 404.0)
    assert a.evidence["ratio"] >= 10 and a.evidence["baseline"] == pytest.approx(1.0, rel=0.3)
    clip = float(re.search(r"max_norm about ([0-9.]+)", a.recommendations[0].magnitude)[1])
    assert clip == pytest.approx(2 * a.evidence["baseline"], rel=0.05)
    # a fast growth (+5% per step) is measured against where it started
    g = np.exp(0.5 * rng.standard_normal(800))
    g[400:] *= np.exp(0.05 * np.arange(400))
    mon = Monitor()
    for i, v in enumerate(g):
        mon.step(i, grad_norm=v)
    (a,) = mon.alarms
    assert 400 < a.start < 480


# ------------------------------------------------------------------------------------------------
# collapse to one class
# ------------------------------------------------------------------------------------------------


def _stats(confusion) -> dict:
    cm = np.asarray(confusion)
    return {"confusion": cm, "balanced_accuracy": float(np.mean(np.diag(cm) / cm.sum(1)))}


def test_collapse_to_one_class():
    healthy = _stats([[50, 5, 5], [5, 20, 5], [3, 2, 25]])
    collapsed = _stats([[60, 0, 0], [29, 1, 0], [30, 0, 0]])
    mon = Monitor(stop_on="stuck")
    mon.epoch(0, val={"loss": 1.0}, stats=healthy)
    mon.epoch(1, val={"loss": 1.0}, stats=collapsed)
    assert mon.alarms == []  # one evaluation is not enough (collapse_epochs=2)
    mon.epoch(2, val={"loss": 1.0}, stats=collapsed)
    (a,) = mon.alarms
    assert (a.code, a.cause, a.severity, a.start, a.end) == ("stuck", "majority-collapse",
                                                             "warning", 1.0, 2.0)
    ev = a.evidence
    assert ev["predicted_class"] == 0 and ev["swallowed"] == pytest.approx(59 / 60)
    assert ev["pred_share"] == pytest.approx(119 / 120) and ev["label_share"] == 0.5
    assert ev["class_weights"].tolist() == pytest.approx([2 / 3, 4 / 3, 4 / 3])
    assert mon.should_stop
    mon.epoch(3, val={"loss": 1.0}, stats=collapsed)
    assert len(mon.alarms) == 1  # same episode


def test_collapse_from_real_metrics_statistics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 2000)
    logits = rng.normal(size=(2000, 4)).astype(np.float32)
    logits[:, 2] += 8.0  # everything called class 2
    m = lossdiag.Metrics(4)
    m.update(logits, y)
    st = m.compute()
    mon = Monitor()
    for e in range(2):
        mon.epoch(e, val={"loss": st["loss"], "accuracy": st["accuracy"]}, stats=st)
    assert [a.cause for a in mon.alarms] == ["majority-collapse"]
    assert mon.history.stats[1]["confusion"].sum() == 2000


def test_collapse_without_a_confusion_matrix():
    # large vocabularies keep per-class counts only: the same alarm from the frequencies and
    # recalls, with the same evidence
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 2000)
    logits = rng.normal(size=(2000, 4)).astype(np.float32)
    logits[:, 2] += 8.0
    found = []
    for confusion in (True, False):
        m = lossdiag.Metrics(4, confusion=confusion)
        m.update(logits, y)
        st = m.compute()
        assert (st["confusion"] is None) == (not confusion)
        mon = Monitor()
        for e in range(2):
            mon.epoch(e, val={"loss": st["loss"]}, stats=st)
        (a,) = mon.alarms
        found.append(a.evidence)
    for k in ("predicted_class", "swallowed", "pred_share", "label_share", "minority_recall"):
        assert found[1][k] == pytest.approx(found[0][k], rel=1e-12), k


# ------------------------------------------------------------------------------------------------
# the API
# ------------------------------------------------------------------------------------------------


def test_history_is_kept_and_step_every():
    mon = Monitor(step_every=10)
    for i in range(100):
        mon.step(i, loss=1.0 + 0.01 * (i % 3), lr=0.1, grad_norm=2.0, epoch=i // 50,
                 accuracy=0.5)
    mon.step(100, loss=math.nan)
    h = mon.history
    assert h.steps.tolist() == [*range(0, 100, 10), 100]  # NaN steps are always kept
    assert set(h.keys("step")) == {"train/loss", "train/grad_norm", "train/accuracy", "lr"}
    assert h.step_epochs.tolist()[:2] == [0.0, 0.0]
    mon.epoch(0, train={"loss": 1.0}, val={"loss": 1.1, "acc": 0.6}, lr=0.1)
    assert h.val["accuracy"].tolist() == [0.6]


def test_tensors_and_numpy_scalars_are_accepted():
    torch = pytest.importorskip("torch")
    mon = Monitor()
    w = torch.ones((), requires_grad=True)
    mon.step(torch.tensor(3), loss=w * 2.0, lr=np.float32(0.5),
             grad_norm=torch.tensor([1.5], dtype=torch.bfloat16))
    mon.epoch(np.int64(0), train={"loss": torch.tensor(1.0)}, val={"loss": np.float64(1.2)})
    assert mon.history.column("train/loss", "step")[1].tolist() == [2.0]
    assert mon.history.step_lr.tolist() == [0.5]


def test_bad_input_is_refused_with_the_argument_named():
    mon = Monitor()
    with pytest.raises(ValueError, match="step"):
        mon.step(math.nan, loss=1.0)
    with pytest.raises(TypeError, match="loss"):
        mon.step(0, loss=np.ones(3))
    with pytest.raises(TypeError, match="loss"):
        mon.step(0, loss="abc")
    with pytest.raises(TypeError, match="lr"):
        mon.step(0, lr=True)
    with pytest.raises(TypeError, match="train"):
        mon.epoch(0, train=[1.0])
    with pytest.raises(TypeError, match="stats"):
        mon.epoch(0, stats=[1.0])
    mon.epoch(3, train={"loss": 1.0})
    with pytest.raises(ValueError, match="decrease"):
        mon.epoch(2, train={"loss": 1.0})
    with pytest.raises(ValueError, match="stop_on"):
        Monitor(stop_on=("nan",))
    with pytest.raises(TypeError, match="stop_on"):
        Monitor(stop_on=3)
    with pytest.raises(TypeError, match="thresholds"):
        Monitor(thresholds={"window": 3})
    with pytest.raises(ValueError, match="step_every"):
        Monitor(step_every=0)
    with pytest.raises(TypeError, match="on_alarm"):
        Monitor(on_alarm=[1])
    with pytest.raises(ValueError, match="window"):
        AlarmThresholds(window=0)
    with pytest.raises(ValueError, match="spike_sigmas"):
        AlarmThresholds(spike_sigmas=-1.0)
    with pytest.raises(TypeError, match="warmup"):
        AlarmThresholds(warmup=math.inf)


def test_on_alarm_callbacks_and_negative_losses():
    seen = []
    mon = Monitor(on_alarm=seen.append)
    mon.add_alarm_callback(lambda f: seen.append(f.code))
    for i, v in enumerate([-1.0, -2.0, -3.0, -50.0, -4.0, 100.0, math.nan]):
        mon.step(i, loss=v)  # a signed loss (an ELBO...): only non-finite applies
    assert len(seen) == 2 and seen[0].code == "non-finite" and seen[1] == "non-finite"


def test_diagnose_adds_the_alarms_and_write_report(tmp_path):
    mon = Monitor(num_classes=3)
    collapsed = _stats([[60, 0, 0], [29, 1, 0], [30, 0, 0]])
    for e in range(8):
        mon.epoch(e, train={"loss": 1.0 - 0.01 * e}, val={"loss": 1.05 - 0.01 * e},
                  stats=collapsed)
    assert [a.cause for a in mon.alarms] == ["majority-collapse"]
    d = mon.diagnose()
    assert "stuck" in d and any("Monitor raised" in n for n in d.notes)
    assert d.summary["counts"]["warning"] >= 1
    paths = mon.write_report(tmp_path / "run")
    rep = json.loads(paths["json"].read_text())
    assert "stuck" in [f["code"] for f in rep["findings"]]
    assert "stuck" in paths["html"].read_text()
    h = History.load(paths["history"])
    assert len(h) == 8 and h.stats[0]["confusion"].sum() == 120
    # a clean run: the diagnosis is returned as is
    mon = Monitor()
    for e in range(8):
        mon.epoch(e, train={"loss": 2.0 * 0.8**e})
    assert mon.diagnose().notes == lossdiag.diagnose(mon.history).notes


def test_diagnose_puts_step_alarms_on_the_epoch_axis():
    rng = np.random.default_rng(0)
    mon = Monitor(num_classes=4)
    step = 0
    for e in range(6):
        for _ in range(20):
            loss = ((1.4 * np.exp(-step / 40) + 0.2) * np.exp(0.2 * rng.standard_normal())
                    if step < 90 else 0.3 * np.exp(0.15 * (step - 90)))
            mon.step(step, loss=loss, lr=0.5, epoch=e)
            step += 1
        mon.epoch(e, val={"loss": 0.5 + 0.1 * e})
    (a,) = mon.alarms
    assert (a.unit, a.start, a.end) == ("step", 84.0, 101.0)  # growth from step 90
    d = mon.diagnose()
    assert d.summary["unit"] == "epoch"
    f = d.get("diverging")  # the report shades it on the epoch axis, where it happened
    # (per-step records sit inside their epoch: step 84 of 20-step epoch 4 reads as 4.2)
    assert f.unit == "epoch" and 4.0 <= f.start < 5.0 and f.end >= 5.0
    assert mon.history.train["loss"][-1] > 5  # the epoch train loss: mean of its steps


def test_scalars():
    m = lossdiag.Metrics(3, top_k=(1, 2))
    rng = np.random.default_rng(0)
    m.update(rng.normal(size=(50, 3)).astype(np.float32), rng.integers(0, 3, 50))
    st = m.compute()
    s = scalars(st, prefix="val_", per_class=True, loss_key="ce")
    assert s["val_ce"] == st["loss"] and s["val_top2_accuracy"] == st["top_k_accuracy"][2]
    assert s["val_recall_1"] == st["recall"][1] and "val_loss" not in s
    assert all(type(v) is float for v in s.values())
    with pytest.raises(TypeError, match="stats"):
        scalars([1.0])


def test_replay_orders_steps_before_their_epoch():
    from lossdiag.monitor import _records

    h = History()
    for s in range(6):
        h.log_step(s, train={"loss": 1.0}, epoch=s // 3)
        if s % 3 == 2:
            h.log(s // 3, val={"loss": 1.0})
    assert [(k, x) for k, x, _ in _records(h)] == [
        ("step", 0.0), ("step", 1.0), ("step", 2.0), ("epoch", 0.0),
        ("step", 3.0), ("step", 4.0), ("step", 5.0), ("epoch", 1.0)]
    mon = Monitor.replay(h)
    assert mon.history.steps.tolist() == h.steps.tolist() and len(mon.history) == 2


def test_import_lossdiag_imports_no_framework():
    import subprocess

    code = ("import sys, lossdiag; lossdiag.Monitor; lossdiag.monitor; "
            "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning', 'keras', "
            "'transformers', 'torchmetrics', 'tensorflow', 'jax', 'matplotlib') "
            "if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    env = {**os.environ, "PYTHONPATH": str(Path(lossdiag.__file__).parent.parent)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_many_steps():
    # memory and work per step are bounded by the windows (timings belong in bench/)
    mon = Monitor()
    for i in range(5000):
        mon.step(i, loss=1.0 + 0.1 * math.sin(i), grad_norm=1.0)
    assert len(mon.history.steps) == 5000 and mon.alarms == []


def test_docstring_examples():
    import doctest

    import lossdiag.monitor

    res = doctest.testmod(lossdiag.monitor, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
