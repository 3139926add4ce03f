"""Every threshold the diagnosis uses, in one documented place.

All thresholds are *relative*: to the first loss, to the chance level ``ln C``, to the entropy of
the class prior, to the best loss so far, to the level of the curve or to its own noise.  Pass a
modified copy to ``diagnose(..., thresholds=...)``:

>>> from dataclasses import replace
>>> from lossdiag.diagnosis.thresholds import DEFAULT
>>> strict = replace(DEFAULT, overfit_min_rise=0.05)
>>> strict.overfit_min_rise
0.05
>>> print(DEFAULT.markdown_table().splitlines()[0])
| name | default | used by | meaning |
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["DEFAULT", "Thresholds"]


def _t(default: Any, used_by: str, doc: str) -> Any:
    return field(default=default, metadata={"used_by": used_by, "doc": doc})


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of the diagnosis (see each field's ``metadata['doc']``)."""

    # ------------------------------------------------------------------ general
    min_points: int = _t(5, "all", "fewer finite points than this in a curve: trend checks on "
                         "it are skipped")
    max_points: int = _t(400, "all", "longer curves (per-step logs) are reduced to this many "
                         "bins (median per bin) before trend checks")
    smooth_window: int = _t(5, "all", "window (points) of the running median used to smooth "
                            "curves before comparing levels")
    percent_score_max: float = _t(1.5, "all", "an accuracy-like curve whose maximum exceeds "
                                  "this (and is <= 100) is read as percent and divided by 100")

    # ------------------------------------------------------------------ diverging
    diverge_min_rise: float = _t(1.5, "diverging", "smoothed training loss at the end >= this "
                                 "x its minimum (best loss so far) ...")
    diverge_min_consistency: float = _t(0.5, "diverging", "... and the rise is consistent: "
                                        "Spearman correlation of loss with time after the "
                                        "minimum >= this")
    diverge_spike_rise: float = _t(10.0, "diverging", "a peak >= this x the minimum counts "
                                   "even if the loss came partly back down")
    diverge_val_only_rise: float = _t(3.0, "diverging", "without a training loss, the "
                                      "validation loss must rise this x above its minimum "
                                      "(smaller rises are overfitting)")
    diverge_big_growth: float = _t(100.0, "diverging", "growth per epoch above this: "
                                   "recommend a 100x smaller LR instead of 10x")

    # ------------------------------------------------------------------ stuck
    stuck_max_improvement: float = _t(0.05, "stuck", "the loss improved by less than this "
                                      "fraction of its first value: 'does not decrease'")
    stuck_near_level: float = _t(0.05, "stuck", "|loss - reference| <= this x reference "
                                 "counts as 'at' ln C or at the prior entropy")
    stuck_prior_distinct: float = _t(0.9, "stuck", "the prior entropy is used as a separate "
                                     "level only if below this x ln C")
    stuck_lr_low_consistency: float = _t(0.8, "stuck", "a flat loss that still decreases "
                                         "this consistently (-Spearman) points to a too-low LR")
    stuck_majority_tol: float = _t(0.02, "stuck", "accuracy within this of the majority-class "
                                   "rate (absolute, or 2 noise sigmas if larger) ...")
    stuck_minority_recall: float = _t(0.2, "stuck", "... and mean recall of the other classes "
                                      "below this: majority-class collapse")
    stuck_constant_score_frac: float = _t(0.8, "stuck", "without statistics: the accuracy "
                                          "identical (to 1e-4) in this share of epochs means "
                                          "constant predictions")
    stuck_high_score: float = _t(0.9, "stuck", "without ln C or label frequencies, a flat "
                                 "loss with an accuracy above this is early convergence")
    stuck_target_rate: float = _t(0.02, "stuck", "relative loss decrease per epoch a healthy "
                                  "early phase reaches; the LR raise factor is computed from "
                                  "it")

    # ------------------------------------------------------------------ overfitting
    overfit_min_rise: float = _t(0.10, "overfitting", "smoothed validation loss at the end >= "
                                 "(1 + this) x its best: 'rising'")
    overfit_min_train_drop: float = _t(0.05, "overfitting", "training loss must have fallen "
                                       "by this fraction since the best validation epoch")
    overfit_plateau_train_drop: float = _t(0.25, "overfitting", "plateau variant: no new "
                                           "best for the patience while training loss fell "
                                           "by this fraction")
    noise_sigmas: float = _t(3.0, "overfitting, decoupling, slow-tail", "changes must also "
                             "exceed this many noise sigmas of the curve")
    es_patience: int = _t(5, "overfitting", "patience of the simulated Keras EarlyStopping")
    es_rel_min_delta: float = _t(0.005, "overfitting", "min_delta of the simulated "
                                 "EarlyStopping, relative to the best validation loss")

    # ------------------------------------------------------------------ overconfident
    overconf_min_rise: float = _t(0.10, "overconfident", "validation loss rises by this "
                                  "fraction above its best ...")
    overconf_max_score_change: float = _t(0.03, "overconfident", "... while the accuracy "
                                          "does not rise by more than this (absolute) ...")
    overconf_min_ece_rise: float = _t(0.02, "overconfident", "... and the calibration error "
                                      "(ECE) grows by at least this (absolute) ...")
    overconf_ece_ratio: float = _t(1.25, "overconfident", "... and by at least this factor")

    # ------------------------------------------------------------------ decoupling
    decouple_flat: float = _t(0.06, "loss-accuracy-decoupling", "validation loss (smoothed) "
                              "falls by less than this fraction from first to last point ...")
    decouple_loss_per_score: float = _t(0.35, "loss-accuracy-decoupling", "... or by less than "
                                        "this x the relative accuracy gain ...")
    decouple_max_rise: float = _t(0.15, "loss-accuracy-decoupling", "... and rises by less than "
                                  "this ...")
    decouple_max_range: float = _t(0.12, "loss-accuracy-decoupling", "... and its range (max - "
                                   "min) stays within this fraction of its level: 'roughly "
                                   "flat' (a U-shaped loss is overfitting, not decoupling)")
    decouple_min_score_rise: float = _t(0.05, "loss-accuracy-decoupling", "accuracy rises "
                                        "by at least this (absolute) and 10% relative")
    decouple_min_loss_fall: float = _t(0.10, "loss-accuracy-decoupling", "reverse case: loss "
                                       "falls by this fraction while accuracy is flat")
    decouple_flat_score: float = _t(0.01, "loss-accuracy-decoupling", "reverse case: "
                                    "accuracy change below this counts as flat")
    decouple_train_fall: float = _t(0.10, "loss-accuracy-decoupling", "the training loss "
                                    "must fall by this fraction (the model is learning)")

    # ------------------------------------------------------------------ slow tail
    tail_fraction: float = _t(0.4, "slow-tail", "the tail is the last this share of points "
                              "(at least min_points)")
    tail_min_drop: float = _t(0.05, "slow-tail", "the tail still decreases by at least this "
                              "fraction of its starting level")
    tail_rate_ratio: float = _t(0.25, "slow-tail", "tail rate / early rate (relative per "
                                "epoch) below this: diminishing returns")
    tail_linear_r2: float = _t(0.97, "slow-tail", "a tail this well fitted by a straight line "
                               "counts as 'nearly linear'")
    tail_horizon: float = _t(0.5, "slow-tail", "projection horizon, as a share of the epochs "
                             "run so far (at least 5)")
    tail_worth: float = _t(0.05, "slow-tail", "a projected relative gain above this over the "
                           "horizon is 'worth continuing'")

    # ------------------------------------------------------------------ oscillating
    osc_min_rel_noise: float = _t(0.10, "oscillating", "robust noise sigma of the loss / its "
                                  "level above this ...")
    osc_min_zigzag: float = _t(0.35, "oscillating", "... and this share of consecutive changes "
                               "reverse direction (noise, not trend)")
    osc_target_rel_noise: float = _t(0.03, "oscillating", "noise level to aim for; the LR / "
                                     "batch factor is computed from it")

    # ------------------------------------------------------------------ class imbalance
    imbalance_ratio: float = _t(5.0, "class-imbalance", "most / least frequent class at or "
                                "above this: imbalanced")
    imbalance_recall_gap: float = _t(0.10, "class-imbalance", "accuracy - balanced accuracy "
                                     "above this makes the finding a warning")

    def markdown_table(self) -> str:
        """The thresholds as a Markdown table (name, default, check, meaning)."""
        rows = ["| name | default | used by | meaning |", "|---|---|---|---|"]
        for f in fields(self):
            rows.append(f"| `{f.name}` | {getattr(self, f.name)} | {f.metadata['used_by']} | "
                        f"{f.metadata['doc']} |")
        return "\n".join(rows)


DEFAULT = Thresholds()
