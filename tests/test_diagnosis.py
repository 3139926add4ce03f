"""Findings on hand-made and synthetic histories: each check fires on its situation, with the
right numbers, and stays quiet on healthy (and messy-but-healthy) runs."""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
from lossdiag.diagnosis import Diagnosis, Finding, Thresholds, diagnose
from lossdiag.diagnosis import cli as diag_cli
from lossdiag.diagnosis._stats import (
    class_weights_balanced,
    fit_tail,
    keras_early_stopping,
    noise_sigma,
)
from lossdiag.diagnosis.report import CODES
from lossdiag.diagnosis.thresholds import DEFAULT
from lossdiag.history import History, _Table

LOGS = Path(__file__).parent / "fixtures" / "logs"
DOCS = Path(__file__).parent.parent / "docs" / "diagnosis.md"


def healthy(n: int = 60, seed: int = 0, noise: float = 0.02, vnoise: float = 0.03):
    rng = np.random.default_rng(seed)
    e = np.arange(n, dtype=float)
    tl = (2.0 * np.exp(-e / 8) + 0.30) * np.exp(noise * rng.standard_normal(n))
    vl = (1.9 * np.exp(-e / 8) + 0.40) * np.exp(vnoise * rng.standard_normal(n))
    ta = 0.92 - 0.6 * np.exp(-e / 8) + 0.003 * rng.standard_normal(n)
    va = 0.88 - 0.6 * np.exp(-e / 8) + 0.005 * rng.standard_normal(n)
    return e, tl, vl, ta, va


def warnings_of(d: Diagnosis) -> list[str]:
    return [f"{f.code}:{f.cause}" for f in d.at_least("warning")]


# ------------------------------------------------------------------ healthy and messy logs


@pytest.mark.parametrize("seed", range(3))
def test_healthy_run_raises_nothing(seed):
    e, tl, vl, ta, va = healthy(seed=seed)
    h = History.from_arrays(e, train={"loss": tl, "accuracy": ta},
                            val={"loss": vl, "accuracy": va})
    d = diagnose(h, num_classes=10)
    assert d.findings == []
    assert "No problems found" in str(d)


@pytest.mark.parametrize("seed", range(3))
def test_messy_but_healthy_logs_raise_no_warning(seed):
    e, tl, vl, ta, va = healthy(seed=seed)
    n = len(e)
    cases = {
        "percent": History.from_arrays(e, train={"loss": tl, "acc": 100 * ta},
                                       val={"loss": vl, "acc": 100 * va}),
        "nan-metric": History.from_arrays(e, train={"loss": tl},
                                          val={"loss": vl, "accuracy": va,
                                               "f1": np.full(n, np.nan)}),
        "no-val": History.from_arrays(e, train={"loss": tl, "accuracy": ta}),
    }
    # a step learning-rate schedule that steps the loss down
    lr = np.where(e < 30, 0.1, np.where(e < 45, 0.01, 0.001))
    tl2, vl2 = tl.copy(), vl.copy()
    tl2[30:] *= 0.7
    vl2[30:] *= 0.8
    tl2[45:] *= 0.9
    vl2[45:] *= 0.95
    cases["lr-steps"] = History.from_arrays(e, train={"loss": tl2},
                                            val={"loss": vl2, "accuracy": va}, lr=lr)
    cases["lr-steps-unlogged"] = History.from_arrays(e, train={"loss": tl2},
                                                     val={"loss": vl2, "accuracy": va})
    vl3 = vl.copy()
    vl3[[17, 41]] *= [2.5, 1.8]  # two wild validation points
    cases["spikes"] = History.from_arrays(e, train={"loss": tl}, val={"loss": vl3,
                                                                      "accuracy": va})
    for name, h in cases.items():
        d = diagnose(h, num_classes=10)
        assert warnings_of(d) == [], (name, str(d))
    d = diagnose(cases["percent"], num_classes=10)
    assert any("percentage" in n for n in d.notes)
    d = diagnose(cases["nan-metric"])
    assert any("'val/f1' is non-finite in every epoch" in n for n in d.notes)
    assert "non-finite" not in d


def step_history(n_steps: int, seed: int = 0, *, metrics: int = 2) -> History:
    """A per-step log: minibatch-noisy training loss, validation every 1000 steps."""
    rng = np.random.default_rng(seed)
    st = np.arange(n_steps, dtype=float)
    cols = {}
    tl = (2.0 * np.exp(-st / (n_steps / 6)) + 0.3) * np.exp(0.25 * rng.standard_normal(n_steps))
    cols["train/loss"] = (tl, np.ones(n_steps, bool))
    every = max(n_steps // 100, 1)
    vmask = np.zeros(n_steps, bool)
    vmask[every - 1::every] = True
    vl = np.where(vmask, (1.9 * np.exp(-st / (n_steps / 6)) + 0.4)
                  * np.exp(0.03 * rng.standard_normal(n_steps)), np.nan)
    cols["val/loss"] = (vl, vmask)
    extra = ["accuracy", "iou", "dice", "f1", "auc", "precision", "recall"]
    for i in range(max(0, metrics - 2)):
        name = extra[i % len(extra)]
        split = "val" if i % 2 else "train"
        a = 0.9 - 0.5 * np.exp(-st / (n_steps / 6)) + 0.02 * rng.standard_normal(n_steps)
        m = vmask if split == "val" else np.ones(n_steps, bool)
        cols[f"{split}/{name}"] = (np.where(m, a, np.nan), m)
    h = History(num_classes=10)
    h._steps = _Table.from_arrays("step", st, cols)
    h._step_epoch = [None] * n_steps
    return h


def test_per_step_log_is_binned_and_stays_quiet():
    h = step_history(20_000, metrics=4)
    d = diagnose(h)
    assert d.summary["unit"] == "step" and d.summary["points"] == 20_000
    assert warnings_of(d) == []


# ------------------------------------------------------------------ non-finite


def test_nonfinite_first_epoch_and_sudden_cause():
    loss = [2.3, 1.9, 1.7, 1.6, 1.55, 1.5, 1.45, np.nan, np.nan]
    h = History.from_arrays(np.arange(9), train={"loss": loss}, val={"loss": loss})
    f = diagnose(h).get("non-finite")
    assert f is not None and f.severity == "error" and f.start == 7
    assert f.cause == "sudden" and f.evidence["last_finite"] == pytest.approx(1.45)
    assert "log(0)" in f.explanation and "from logits" in f.recommendations[0].action


def test_nonfinite_after_divergence_names_the_growth():
    loss = [2.0, 1.5, 1.2, 3.0, 30.0, 900.0, 5e4, np.inf]
    h = History.from_arrays(np.arange(8), train={"loss": loss}, lr=[0.5] * 8)
    d = diagnose(h, num_classes=10)
    f = d.get("non-finite")
    assert f.cause == "overflow-after-divergence" and f.evidence["value"] == "+inf"
    assert "diverging" in d
    assert "0.05" in f.recommendations[0].magnitude  # 10x smaller than 0.5


def test_nonfinite_only_in_a_metric_is_not_an_alarm():
    e, tl, vl, ta, va = healthy()
    va = va.copy()
    va[20:25] = np.nan
    d = diagnose(History.from_arrays(e, train={"loss": tl}, val={"loss": vl, "accuracy": va}))
    assert "non-finite" not in d and warnings_of(d) == []
    assert any("non-finite value" in n for n in d.notes)


def test_nonfinite_found_in_step_records_too():
    h = History()
    for s in range(50):
        h.log_step(s, train={"loss": 1.0 if s != 33 else float("nan")})
    for ep in range(5):
        h.log(ep, train={"loss": 1.0 - 0.01 * ep})
    f = diagnose(h).get("non-finite")
    assert f is not None and f.unit == "step" and f.start == 33


# ------------------------------------------------------------------ diverging


def test_diverging_growth_rate_start_and_chance():
    e = np.arange(25, dtype=float)
    loss = np.where(e < 8, 2.3 * np.exp(-e / 4) + 0.2, (2.3 * np.exp(-2) + 0.2) * 1.5 ** (e - 8))
    h = History.from_arrays(e, train={"loss": loss}, lr=np.full(25, 0.3))
    d = diagnose(h, num_classes=10)
    f = d.get("diverging")
    assert f.start == 8 and f.evidence["growth_model"] == "exponential"
    assert f.evidence["growth_per_epoch"] == pytest.approx(1.5, rel=0.02)
    assert f.evidence["above_chance_from"] == 12  # 0.511 * 1.5**4 = 2.59 > ln 10 = 2.30
    assert f.severity == "error" and f.cause == "lr-too-high"
    lower = f.recommendations[0]
    assert "10x" in lower.magnitude and "0.03" in lower.magnitude
    assert "ln C = 2.3" in f.explanation
    assert "stuck" not in d and "overfitting" not in d


def test_diverging_after_warmup_recommends_capping_the_peak():
    e = np.arange(30, dtype=float)
    lr = np.minimum(1.0, (e + 1) / 15)
    loss = np.where(e < 6, 1.2 * np.exp(-e / 2) + 0.2, 0.26 * 2.0 ** (e - 6))
    d = diagnose(History.from_arrays(e, train={"loss": loss}, lr=lr))
    f = d.get("diverging")
    assert f.evidence["lr_first"] == pytest.approx(1 / 15)
    assert f.recommendations[0].action.startswith("Cap the peak learning rate")
    assert re.search(r"about 0\.1\d", f.recommendations[0].magnitude)


def test_diverging_fast_growth_asks_for_100x():
    e = np.arange(8, dtype=float)
    loss = 2.0 * 300.0 ** e
    f = diagnose(History.from_arrays(e, train={"loss": loss}, lr=[1.0] * 8)).get("diverging")
    assert f.start == 0 and "100x" in f.recommendations[0].magnitude


def test_noise_and_overfitting_are_not_divergence():
    rng = np.random.default_rng(3)
    e = np.arange(40, dtype=float)
    noisy = 0.3 * np.exp(0.35 * rng.standard_normal(40))
    d = diagnose(History.from_arrays(e, train={"loss": noisy}))
    assert "diverging" not in d
    tl = 1.5 * np.exp(-e / 6) + 0.02
    vl = 1.0 + 0.004 * (e - 8) ** 2  # val loss doubles: overfitting, not divergence
    d = diagnose(History.from_arrays(e, train={"loss": tl}, val={"loss": vl}))
    assert "diverging" not in d and "overfitting" in d


# ------------------------------------------------------------------ stuck


def test_stuck_at_chance_level():
    rng = np.random.default_rng(0)
    e = np.arange(30, dtype=float)
    loss = math.log(10) + 0.002 * rng.standard_normal(30)
    acc = 0.1 + 0.003 * rng.standard_normal(30)
    f = diagnose(History.from_arrays(e, train={"loss": loss}, val={"accuracy": acc}),
                 num_classes=10).get("stuck")
    assert f.cause == "uniform-predictions" and "2.3" in f.explanation
    assert "Overfit a single batch" in f.recommendations[0].action


def test_stuck_lr_too_low_with_factor():
    e = np.arange(30, dtype=float)
    loss = 1.386 - 0.0005 * e
    f = diagnose(History.from_arrays(e, train={"loss": loss}, lr=[1e-5] * 30),
                 num_classes=4).get("stuck")
    assert f.cause == "lr-too-low"
    assert f.evidence["improvement_per_epoch"] == pytest.approx(0.0005 * 29 / 1.386 / 29,
                                                                rel=0.05)
    mag = f.recommendations[0].magnitude
    assert "100x" in mag and "0.001" in mag


def _stats(freq, acc, recall, ece=0.02):
    return {"label_freq": np.asarray(freq), "accuracy": acc, "recall": np.asarray(recall),
            "balanced_accuracy": float(np.mean(recall)), "ece": ece,
            "num_classes": len(freq)}


def test_stuck_majority_collapse_with_sklearn_balanced_weights():
    from sklearn.utils.class_weight import compute_class_weight

    rng = np.random.default_rng(1)
    freq = np.array([0.9, 0.06, 0.04])
    e = np.arange(25, dtype=float)
    prior_h = float(-(freq * np.log(freq)).sum())
    loss = prior_h * (1 + 0.3 * np.exp(-e)) + 0.002 * rng.standard_normal(25)
    st = [_stats(freq, 0.9, [1.0, 0.0, 0.02])] * 25
    h = History.from_arrays(e, train={"loss": loss}, val={"loss": loss, "accuracy": [0.9] * 25},
                            stats=st)
    d = diagnose(h)
    f = d.get("stuck")
    assert f.cause == "majority-collapse" and d.summary["num_classes"] == 3
    y = np.repeat([0, 1, 2], (freq * 1000).astype(int))
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(f.evidence["class_weights"], expected, rtol=1e-9)
    assert "{0: 0.37, 1: 5.56, 2: 8.33}" in f.recommendations[0].magnitude
    assert "class-imbalance" in d and d.get("class-imbalance").severity == "warning"
    assert "loss-accuracy-decoupling" not in d  # explained by the collapse


def test_stuck_constant_accuracy_without_statistics():
    e = np.arange(20, dtype=float)
    loss = 0.45 + 0.2 * np.exp(-e)
    h = History.from_arrays(e, train={"loss": loss}, val={"loss": loss + 0.02,
                                                         "accuracy": [0.8125] * 20})
    f = diagnose(h).get("stuck")
    assert f.cause == "majority-collapse" and f.evidence["constant_share"] == 1.0


def test_stuck_at_prior_entropy():
    freq = np.array([0.7, 0.2, 0.1])
    prior_h = float(-(freq * np.log(freq)).sum())
    e = np.arange(20, dtype=float)
    st = [{"label_freq": freq}] * 20
    h = History.from_arrays(e, train={"loss": prior_h * (1 + 0.001 * np.sin(e))}, stats=st)
    f = diagnose(h).get("stuck")
    assert f.cause == "prior-predictions" and "entropy of the label frequencies" in f.explanation


def test_fast_convergence_is_not_stuck():
    e = np.arange(20, dtype=float)
    h = History.from_arrays(e, train={"loss": 0.05 + 0.001 * np.cos(e)},
                            val={"loss": 0.07 + 0.001 * np.sin(e), "accuracy": [0.98] * 20})
    assert "stuck" not in diagnose(h, num_classes=10)
    assert "stuck" not in diagnose(h)


# ------------------------------------------------------------------ overfitting


def test_overfitting_best_epoch_and_keras_early_stopping():
    e = np.arange(40, dtype=float)
    tl = 1.5 * np.exp(-e / 6) + 0.02
    vl = 0.9 + 0.5 * np.exp(-e / 3) + 0.003 * np.maximum(e - 10, 0) ** 1.5
    h = History.from_arrays(e, train={"loss": tl}, val={"loss": vl})
    f = diagnose(h).get("overfitting")
    best = int(np.argmin(vl))
    assert f.cause == "val-loss-rising" and f.evidence["best_epoch"] == best
    assert f.evidence["worse_by"] == pytest.approx(vl[-1] / vl[best] - 1)
    md = f.evidence["min_delta"]
    assert md == pytest.approx(0.005 * vl.min(), rel=0.01)
    # independent re-implementation of keras.callbacks.EarlyStopping (mode="min")
    bestv, wait, stop = np.inf, 0, None
    for i, v in enumerate(vl):
        if v < bestv - md:
            bestv, wait = v, 0
        else:
            wait += 1
            if wait >= 5:
                stop = i
                break
    assert f.evidence["early_stop_epoch"] == stop
    assert f"stopped at epoch {stop}" in f.explanation
    assert f.recommendations[0].magnitude.startswith("EarlyStopping(monitor='val_loss'")


def test_overfitting_plateau_is_info_and_rising_accuracy_suppresses_it():
    e = np.arange(40, dtype=float)
    tl = 1.5 * np.exp(-e / 6) + 0.02
    vl = 0.9 + 0.5 * np.exp(-e / 3)
    vl[15:] = vl[15] + 0.002 * np.sin(e[15:])
    acc_flat = 0.7 + 0.002 * np.sin(3 * e)  # flat, but not constant (constant = collapse)
    f = diagnose(History.from_arrays(e, train={"loss": tl},
                                     val={"loss": vl, "accuracy": acc_flat})).get("overfitting")
    assert f is None or f.severity == "info"
    vl2 = vl.copy()
    vl2[20:] = vl2[20] + 0.0001 * (e[20:] - 20)  # no new best after 20
    f = diagnose(History.from_arrays(e, train={"loss": tl},
                                     val={"loss": vl2, "accuracy": acc_flat})).get("overfitting")
    assert f is not None and f.cause == "val-loss-plateau" and f.severity == "info"
    acc_up = 0.5 + 0.01 * e
    f = diagnose(History.from_arrays(e, train={"loss": tl},
                                     val={"loss": vl2, "accuracy": acc_up})).get("overfitting")
    assert f is None


def test_keras_early_stopping_semantics():
    assert keras_early_stopping(np.array([3, 2, 1.5, 1.6, 1.7, 1.55, 1.8]), 3, 0.0) == (5, 2)
    # min_delta: 1.45 is not better than 1.5 by 0.1, so it does not reset the wait
    assert keras_early_stopping(np.array([3, 2, 1.5, 1.45, 1.44, 1.43]), 3, 0.1) == (5, 2)
    assert keras_early_stopping(np.array([3, 2, 1]), 2, 0.0) == (None, 2)


# ------------------------------------------------------------------ decoupling


def test_decoupling_explains_with_statistics():
    e = np.arange(30, dtype=float)
    st = [{"mean_true_class_prob": 0.26 + 0.002 * i, "frac_true_prob_below_inv_e": 0.7,
           "small_margin_correct_frac": 0.4} for i in range(30)]
    h = History.from_arrays(e, train={"loss": 2.0 - 0.03 * e},
                            val={"loss": 3.4 + 0.03 * np.sin(e), "accuracy": 0.12 + 0.004 * e},
                            stats=st)
    d = diagnose(h)
    f = d.get("loss-accuracy-decoupling")
    assert f.cause == "loss-flat-accuracy-rising" and f.severity == "info"
    assert "below 1/e" in f.explanation and "exp(-3.4) = 0.033" in f.explanation
    assert f.evidence["small_margin_correct_frac_last"] == pytest.approx(0.4)
    assert "40% of the correct predictions" in f.explanation
    assert warnings_of(d) == []


def test_decoupling_reverse_and_not_for_saturated_accuracy():
    e = np.arange(30, dtype=float)
    h = History.from_arrays(e, train={"loss": 1.0 * np.exp(-e / 10)},
                            val={"loss": 0.9 * np.exp(-e / 15) + 0.3,
                                 "accuracy": 0.61 + 0.002 * np.sin(3 * e)})
    f = diagnose(h).get("loss-accuracy-decoupling")
    assert f.cause == "loss-falling-accuracy-flat"
    h = History.from_arrays(e, train={"loss": 1.0 * np.exp(-e / 10)},
                            val={"loss": 0.9 * np.exp(-e / 15) + 0.3, "accuracy": [1.0] * 30})
    assert "loss-accuracy-decoupling" not in diagnose(h)


def test_score_names_iou_dice_auc_are_recognised():
    e = np.arange(30, dtype=float)
    for name in ("mIoU", "dice", "auc", "f1"):
        h = History.from_arrays(e, train={"loss": 2.0 - 0.03 * e},
                                val={"loss": 3.4 + 0.03 * np.sin(e), name: 0.12 + 0.004 * e})
        d = diagnose(h)
        assert d.summary["score"] is not None, name
        assert "loss-accuracy-decoupling" in d, name


# ------------------------------------------------------------------ slow tail


def test_slow_tail_power_law_projection():
    e = np.arange(60, dtype=float)
    loss = 1.2 / np.sqrt(1 + e)
    f = diagnose(History.from_arrays(e, train={"loss": loss})).get("slow-tail")
    assert f.evidence["best_fit"] == "power-law"
    assert f.evidence["fit_params"]["p"] == pytest.approx(0.5, abs=0.02)
    k = f.evidence["horizon"]
    assert k == 30
    true_gain = (loss[-1] - 1.2 / np.sqrt(60 + k)) / loss[-1]
    assert f.evidence["projected_gain"] == pytest.approx(true_gain, rel=0.1)
    assert f.evidence["worth_continuing"] is True


def test_slow_tail_linear_and_converged():
    e = np.arange(60, dtype=float)
    loss = np.where(e < 10, 2.0 - 0.12 * e, 0.8 - 0.004 * (e - 10))
    f = diagnose(History.from_arrays(e, train={"loss": loss})).get("slow-tail")
    assert f is not None and f.evidence["best_fit"] == "linear"
    assert f.evidence["tail_linear_r2"] > 0.99
    conv = 1.5 * np.exp(-e / 5) + 0.2
    assert "slow-tail" not in diagnose(History.from_arrays(e, train={"loss": conv}))


def test_fit_tail_recovers_exponential():
    t = np.arange(1, 41, dtype=float)
    y = 0.3 + 0.5 * np.exp(-0.1 * t)
    best = fit_tail(t, y)[0]
    assert best.kind == "exponential"
    assert best.params["c"] == pytest.approx(0.3, abs=0.01)


# ------------------------------------------------------------------ oscillating


def test_oscillating_relates_to_lr_and_batch():
    rng = np.random.default_rng(0)
    e = np.arange(80, dtype=float)
    vl = 0.5 * np.exp(0.3 * rng.standard_normal(80))
    h = History.from_arrays(e, train={"loss": 0.5 + 0.01 * rng.standard_normal(80)},
                            val={"loss": vl}, lr=[0.2] * 80, meta={"batch_size": 2})
    f = diagnose(h).get("oscillating")
    assert f.evidence["rel_noise"] == pytest.approx(0.3, rel=0.35)
    assert f.evidence["batch_size"] == 2 and "batch 2 -> 20" in f.recommendations[1].magnitude
    assert "0.02" in f.recommendations[0].magnitude


def test_a_few_noisy_points_are_not_oscillation():
    e, tl, vl, ta, va = healthy()
    vl = vl.copy()
    vl[[10, 30, 50]] *= 3
    d = diagnose(History.from_arrays(e, train={"loss": tl}, val={"loss": vl}))
    assert "oscillating" not in d


def test_noise_sigma_is_robust():
    rng = np.random.default_rng(0)
    y = np.linspace(3, 1, 200) + 0.05 * rng.standard_normal(200)
    y[[20, 90, 150]] += 5
    assert noise_sigma(y) == pytest.approx(0.05, rel=0.2)


# ------------------------------------------------------------------ imbalance / overconfident


def test_class_imbalance_info_when_handled_well():
    e = np.arange(10, dtype=float)
    st = [_stats([0.8, 0.1, 0.1], 0.95, [0.97, 0.9, 0.9])] * 10
    h = History.from_arrays(e, val={"loss": 0.2 + 0.5 * np.exp(-e)}, stats=st)
    f = diagnose(h).get("class-imbalance")
    assert f.severity == "info" and f.evidence["ratio"] == pytest.approx(8.0)
    st = [_stats([0.4, 0.3, 0.3], 0.9, [0.9, 0.9, 0.9])] * 10
    h = History.from_arrays(e, val={"loss": 0.2 + 0.5 * np.exp(-e)}, stats=st)
    assert "class-imbalance" not in diagnose(h)


def test_class_weights_balanced_matches_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 50 + [1] * 30 + [2] * 15 + [3] * 5)
    freq = np.bincount(y) / len(y)
    np.testing.assert_allclose(class_weights_balanced(freq),
                               compute_class_weight("balanced", classes=np.arange(4), y=y))


def _reliability(conf_wrong_share: float) -> dict:
    edges = np.linspace(0, 1, 11)
    count = np.array([0, 0, 0, 0, 10, 10, 10, 10, 20, 40])
    acc = np.array([0, 0, 0, 0, 0.5, 0.6, 0.7, 0.8, 0.9, 1 - conf_wrong_share * 100 / 40])
    conf = (edges[:-1] + edges[1:]) / 2
    return {"bin_edges": edges, "count": count, "accuracy": acc, "confidence": conf}


def test_overconfident_with_statistics():
    e = np.arange(30, dtype=float)
    vl = 0.5 + 0.3 * np.exp(-e / 2) + 0.01 * np.maximum(e - 8, 0)
    acc = 0.80 + 0.002 * np.sin(3 * e)
    ece = np.where(e < 8, 0.02, 0.02 + 0.006 * (e - 8))
    st = [{"ece": float(ece[i]), "accuracy": 0.8,
           "reliability": _reliability(0.02 if i < 8 else 0.02 + 0.002 * (i - 8))}
          for i in range(30)]
    h = History.from_arrays(e, train={"loss": 0.8 * np.exp(-e / 5)},
                            val={"loss": vl, "accuracy": acc}, stats=st)
    d = diagnose(h)
    f = d.get("overconfident")
    assert f.cause == "confident-mistakes"
    assert f.evidence["ece_best"] == pytest.approx(0.02)
    assert f.evidence["confident_wrong_last"] > f.evidence["confident_wrong_best"]
    assert "2.3" in f.explanation and "0.105" in f.explanation
    assert "temperature" in f.recommendations[0].action.lower()
    # same curves without statistics: the check is skipped, with the reason
    h2 = History.from_arrays(e, train={"loss": 0.8 * np.exp(-e / 5)},
                             val={"loss": vl, "accuracy": acc})
    d2 = diagnose(h2)
    assert "overconfident" not in d2
    assert any(s.code == "overconfident" and "statistics" in s.reason for s in d2.skipped)


# ------------------------------------------------------------------ skipped, input, thresholds


def test_skipped_checks_list_reasons():
    h = History.from_arrays(np.arange(3), train={"loss": [1.0, 0.9, 0.85]})
    d = diagnose(h)
    reasons = {s.code: s.reason for s in d.skipped}
    assert "no validation loss" in reasons["overfitting"]
    assert "only 3" in reasons["stuck"]
    assert "label frequencies" in reasons["class-imbalance"]
    assert "Checks not run" in str(d)


def test_diagnose_input_validation():
    h = History.from_arrays(np.arange(5), train={"loss": [1, 0.9, 0.8, 0.7, 0.6]})
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        diagnose(h, num_classes=1)
    with pytest.raises(TypeError, match="num_classes must be an int, got '3'"):
        diagnose(h, num_classes="3")
    with pytest.raises(TypeError, match="thresholds must be a Thresholds"):
        diagnose(h, thresholds={"overfit_min_rise": 0.1})
    with pytest.raises(TypeError, match="history must be"):
        diagnose(42)
    assert diagnose({"loss": [1.0, 0.9, 0.8, 0.7, 0.6]}).summary["loss"] == "loss"
    with pytest.raises(ValueError, match="code must be one of"):
        Finding("bogus", "info", "t", 0, 1, "x")


def test_thresholds_are_configurable_and_documented():
    e = np.arange(40, dtype=float)
    tl = 1.5 * np.exp(-e / 6) + 0.02
    vl = 1.0 + 0.0004 * np.maximum(e - 10, 0) ** 2  # +34%
    h = History.from_arrays(e, train={"loss": tl}, val={"loss": vl})
    assert "overfitting" in diagnose(h)
    assert "overfitting" not in diagnose(h, thresholds=replace(DEFAULT, overfit_min_rise=0.5,
                                                               overfit_plateau_train_drop=2.0))
    text = DOCS.read_text()
    for f in fields(Thresholds):
        assert f"`{f.name}`" in text, f"threshold {f.name} missing from docs/diagnosis.md"
    for code in CODES:
        assert f"`{code}`" in text


# ------------------------------------------------------------------ report and CLI


def _overfit_history() -> History:
    e = np.arange(40, dtype=float)
    return History.from_arrays(e, train={"loss": 1.5 * np.exp(-e / 6) + 0.02},
                               val={"loss": 0.9 + 0.5 * np.exp(-e / 3)
                                    + 0.003 * np.maximum(e - 10, 0) ** 1.5,
                                    "accuracy": 0.5 + 0.2 * (1 - np.exp(-e / 4))},
                               source="run-42")


def test_json_schema_is_stable_and_strict():
    d = diagnose(_overfit_history(), num_classes=5)
    doc = json.loads(d.to_json(), parse_constant=lambda c: pytest.fail(c))
    assert doc["schema"] == "lossdiag.diagnosis/1"
    assert set(doc) == {"schema", "summary", "findings", "skipped", "notes"}
    f = doc["findings"][0]
    assert set(f) == {"code", "severity", "title", "cause", "start", "end", "unit", "series",
                      "evidence", "explanation", "recommendations"}
    assert f["code"] in CODES and f["recommendations"][0]["rank"] == 1
    assert set(f["recommendations"][0]) == {"rank", "action", "magnitude", "why"}
    assert doc["summary"]["worst_severity"] == "warning"
    assert doc["summary"]["chance_level"] == pytest.approx(math.log(5), rel=1e-5)


def test_text_html_and_plot(tmp_path):
    d = diagnose(_overfit_history())
    text = str(d)
    assert "[WARNING] overfitting" in text and "run-42" in text and "1. Stop early" in text
    out = tmp_path / "r.html"
    page = d.to_html(out)
    assert out.read_text() == page
    assert page.count("data:image/png;base64,") == 1
    assert "http://" not in page and "https://" not in page and "<script" not in page
    fig = d.plot()
    assert len(fig.axes) == 2
    # with statistics: a second image (confidence histograms and reliability diagram)
    st = {"ece": 0.05, "reliability": _reliability(0.02), "bin_edges": np.linspace(0, 1, 11),
          "conf_hist": np.arange(10), "true_prob_hist": np.arange(10)[::-1]}
    h = _overfit_history()
    h._stats = {len(h) - 1: st}
    assert diagnose(h).to_html().count("data:image/png;base64,") == 2


def _cli(argv):
    parser = argparse.ArgumentParser(prog="lossdiag")
    diag_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_formats_and_exit_codes(tmp_path, capsys):
    assert _cli(["diagnose", str(LOGS / "keras_csvlogger.csv"), "--num-classes", "10"]) == 0
    assert "No problems found" in capsys.readouterr().out
    assert _cli(["diagnose", str(LOGS / "keras_csvlogger_nan.csv"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["findings"][0]["code"] == "non-finite"
    assert _cli(["diagnose", str(LOGS / "keras_csvlogger_nan.csv"), "--fail-on", "error"]) == 1
    capsys.readouterr()
    out = tmp_path / "r.html"
    assert _cli(["diagnose", str(LOGS / "lightning_metrics.csv"), "--format", "html",
                 "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert _cli(["diagnose", str(LOGS / "malformed_ragged.csv")]) == 2
    err = capsys.readouterr().err
    assert "malformed_ragged.csv" in err and "expected" in err
    assert _cli(["diagnose", str(LOGS / "plain_custom.csv"), "--map", "epoch=ep",
                 "--map", "train/loss=trn", "--map", "val/loss=vl"]) == 0
    with pytest.raises(SystemExit):
        _cli(["diagnose", "x.csv", "--num-classes", "1"])


def test_one_class_output_on_balanced_labels_is_not_a_majority_collapse():
    """At initialisation a network often outputs one class; with balanced labels that is not
    a collapse from imbalance (the seeds of the LR-too-low scenario show it)."""
    e = np.arange(30, dtype=float)
    st = [_stats([0.26, 0.25, 0.25, 0.24], 0.26, [1.0, 0, 0, 0])] * 30
    h = History.from_arrays(e, train={"loss": 1.80 - 0.0004 * e},
                            val={"loss": 1.85 - 0.0004 * e, "accuracy": [0.26] * 30},
                            stats=st, lr=[1e-6] * 30)
    f = diagnose(h).get("stuck")
    assert f.cause == "lr-too-low"
    h = History.from_arrays(e, train={"loss": 1.80 - 0.0004 * e},
                            val={"loss": 1.85 - 0.0004 * e, "accuracy": [0.26] * 30})
    assert diagnose(h, num_classes=4).get("stuck").cause == "lr-too-low"
