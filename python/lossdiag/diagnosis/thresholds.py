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
    diverge_min_rise: float = _t(1.5, "diverging", "a validation-loss rise is overfitting, not "
                                 "divergence, while the training loss stays below this x its "
                                 "running minimum")
    diverge_growth_rise: float = _t(1.2, "diverging", "sustained growth: the (smoothed) "
                                    "training loss at the end >= this x its lowest level ...")
    diverge_noise_sigmas: float = _t(4.0, "diverging", "... and the rise exceeds this many "
                                     "noise sigmas of log-loss ...")
    diverge_min_consistency: float = _t(0.7, "diverging", "... and rises consistently: rank "
                                        "correlation with time after the minimum >= this")
    diverge_steady_rise: float = _t(1.1, "diverging", "slow variant: a rise of only this x "
                                    "counts when it never reverses ...")
    diverge_steady_consistency: float = _t(0.9, "diverging", "... (rank correlation >= this) "
                                           "...")
    diverge_steady_points: int = _t(5, "diverging", "... over at least this many points ...")
    diverge_steady_sigmas: float = _t(6.0, "diverging", "... and stands this many noise sigmas "
                                      "out of the rising segment's own noise")
    diverge_spike_rise: float = _t(5.0, "diverging", "explosion: a jump to >= this x the median "
                                   "of the points before it ...")
    diverge_spike_keep: float = _t(3.0, "diverging", "... that stays >= this x that level "
                                   "(otherwise the loss came back: see oscillating)")
    diverge_val_only_rise: float = _t(3.0, "diverging", "without a training loss, the "
                                      "validation loss must rise this x above its minimum "
                                      "(smaller rises are overfitting)")
    diverge_big_growth: float = _t(100.0, "diverging", "growth per epoch above this: "
                                   "recommend a 100x smaller LR instead of 10x")
    diverge_chance_ratio: float = _t(1.5, "diverging", "with num_classes: a loss >= this x ln C "
                                     "from the first record on (not falling, not noise) "
                                     "diverged before it was logged")
    diverge_chance_points: int = _t(3, "diverging", "... for at least this many records")

    # ------------------------------------------------------------------ stuck
    stuck_max_improvement: float = _t(0.05, "stuck", "the loss improved by less than this "
                                      "fraction of its first value: 'does not decrease'")
    stuck_near_level: float = _t(0.05, "stuck", "a loss whose lowest value stays within this "
                                 "fraction below ln C (or above it) never beat a uniform guess")
    stuck_steady_noise: float = _t(0.10, "stuck", "a loss noisier than this (relative, point to "
                                   "point) is oscillating, not stuck at a level")
    stuck_learned_accuracy: float = _t(0.5, "stuck", "an accuracy above 1/C + this x (1 - 1/C) "
                                       "means the model learned, whatever the loss level")
    stuck_prior_distinct: float = _t(0.9, "stuck", "the prior entropy is used as a separate "
                                     "level only if below this x ln C")
    stuck_lr_low_consistency: float = _t(0.8, "stuck", "a flat loss that still decreases "
                                         "this consistently (-Spearman) points to a too-low LR "
                                         "...")
    stuck_converged_fraction: float = _t(0.5, "stuck", "... unless it is below this x ln C "
                                         "(converged) ...")
    stuck_converged_score: float = _t(0.9, "stuck", "... or, without num_classes, its accuracy "
                                      "is above this")
    stuck_pinned_spread: float = _t(0.01, "stuck", "a validation score whose values span less "
                                    "than this at a bad value (F1/IoU ~ 0, accuracy ~ 1/C), or "
                                    "that is exactly constant, means one answer for every "
                                    "sample ...")
    stuck_pinned_loss_fall: float = _t(0.25, "stuck", "... unless the loss falls by this "
                                       "fraction meanwhile (then the metric is broken)")
    stuck_frozen_points: int = _t(5, "stuck", "a loss exactly constant (every logged digit) for "
                                  "this many records is frozen: no update at all")
    stuck_majority_tol: float = _t(0.02, "stuck", "accuracy within this of the majority-class "
                                   "rate (absolute, or 2 noise sigmas if larger) ...")
    stuck_minority_recall: float = _t(0.2, "stuck", "... and mean recall of the other classes "
                                      "below this: majority-class collapse")
    stuck_constant_score_frac: float = _t(0.8, "stuck", "without statistics: the accuracy "
                                          "identical (to 1e-4) in this share of epochs means "
                                          "constant predictions")
    stuck_target_rate: float = _t(0.02, "stuck", "relative loss decrease per epoch a healthy "
                                  "early phase reaches; the LR raise factor is computed from "
                                  "it")

    # ------------------------------------------------------------------ overfitting
    overfit_min_rise: float = _t(0.05, "overfitting", "the validation loss at the end (mean of "
                                 "the last fifth) >= (1 + this) x its smoothed best ...")
    overfit_min_z: float = _t(2.5, "overfitting", "... by this many noise sigmas of the curve")
    overfit_persistent_rise: float = _t(0.10, "overfitting", "or: the last third >= (1 + this) x "
                                        "the lowest value ...")
    overfit_persistent_share: float = _t(0.8, "overfitting", "... with this share of the later "
                                         "points >= 5 % above it ...")
    overfit_persistent_z: float = _t(2.0, "overfitting", "... and the rise this many noise "
                                     "sigmas")
    overfit_min_train_drop: float = _t(0.03, "overfitting", "the training loss must have fallen "
                                       "by this fraction (or 2 of its noise sigmas) since the "
                                       "best validation epoch")
    overfit_plateau_train_drop: float = _t(0.25, "overfitting", "plateau variant: no new "
                                           "best for the patience while training loss fell "
                                           "by this fraction, and still falls late")
    overfit_noisy_train_drop: float = _t(0.5, "overfitting", "on a validation loss dominated by "
                                         "noise, only a training loss that fell this fraction "
                                         "...")
    overfit_noisy_gap: float = _t(3.0, "overfitting", "... to this x below the validation loss "
                                  "counts")
    overfit_gap: float = _t(0.05, "overfitting", "score-gap variant: the train-minus-validation "
                                "score gap grew by this (absolute) to at least this while the "
                                "validation score stalled")
    noise_sigmas: float = _t(3.0, "overfitting, slow-tail", "a score gain of this many noise "
                             "sigmas means the model is still learning")
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
    decouple_min_score_gain: float = _t(0.01, "loss-accuracy-decoupling", "the validation score "
                                        "rises by at least this (absolute) ...")
    decouple_min_error_cut: float = _t(0.08, "loss-accuracy-decoupling", "... and cuts the "
                                       "error (1 - score) by this fraction, or rises by "
                                       "decouple_min_rel_gain of itself ...")
    decouple_min_rel_gain: float = _t(0.15, "loss-accuracy-decoupling", "... (relative gain, "
                                      "for low scores such as a hard class's F1) ...")
    decouple_min_z: float = _t(2.0, "loss-accuracy-decoupling", "... by this many noise sigmas "
                               "of the score ...")
    decouple_flat: float = _t(0.03, "loss-accuracy-decoupling", "... while the validation loss "
                              "falls by less than this fraction (or its noise) ...")
    decouple_loss_per_score: float = _t(0.35, "loss-accuracy-decoupling", "... or by less than "
                                        "this x the relative score gain (a loss that hardly "
                                        "follows the score)")
    decouple_train_fall: float = _t(0.10, "loss-accuracy-decoupling", "the training loss "
                                    "must fall by this fraction (the model is learning)")
    decouple_min_loss_fall: float = _t(0.30, "loss-accuracy-decoupling", "reverse case: over a "
                                       "run of at least 10 points the loss falls by this "
                                       "fraction while the score does not move at all")

    # ------------------------------------------------------------------ slow tail
    tail_fraction: float = _t(0.4, "slow-tail", "the tail is the last this share of points "
                              "(at least min_points)")
    tail_min_drop: float = _t(0.03, "slow-tail", "the tail still decreases by at least this "
                              "fraction of its starting level ...")
    tail_min_consistency: float = _t(0.7, "slow-tail", "... consistently (rank correlation <= "
                                     "-this)")
    tail_rate_ratio: float = _t(0.25, "slow-tail", "tail rate / early rate (relative per "
                                "epoch) below this: diminishing returns ...")
    tail_min_points: int = _t(15, "slow-tail", "... judged on runs of at least this many points")
    tail_linear_r2: float = _t(0.9, "slow-tail", "a tail of 8+ points, or a run of at most 30 "
                               "points, this well fitted by one falling straight line creeps "
                               "down at a constant rate")
    tail_lr_done: float = _t(0.05, "slow-tail", "a learning rate that ended at or below this "
                             "share of its peak finished its schedule: no slow-tail")
    tail_horizon: float = _t(0.5, "slow-tail", "projection horizon, as a share of the epochs "
                             "run so far (at least 5)")
    tail_worth: float = _t(0.05, "slow-tail", "a projected relative gain above this over the "
                           "horizon is 'worth continuing'")

    # ------------------------------------------------------------------ oscillating
    osc_min_rel_noise: float = _t(0.10, "oscillating", "robust noise sigma of log-loss (a "
                                  "validation curve, or the error of a validation score) above "
                                  "this ...")
    osc_min_zigzag: float = _t(0.35, "oscillating", "... and this share of consecutive changes "
                               "reverse direction (noise, not trend); the noise must also be "
                               "10 % of the curve's whole range")
    osc_short_noise: float = _t(0.30, "oscillating", "on 5-7 points the noise must reach this")
    osc_wild_noise: float = _t(0.50, "oscillating", "per-step minibatch losses count only above "
                               "this noise")
    osc_spike: float = _t(0.30, "oscillating", "a spike stands this fraction above the median "
                          "of the points before it and of those after it (and 4 noise sigmas, "
                          "and 15 % of the curve's range); how many are needed depends on "
                          "the run's length")
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
