"""Metric names: which split a logged column belongs to, and which way is better."""

from __future__ import annotations

import re

__all__ = ["metric_direction", "normalize_metric_name", "split_metric_key"]

_VAL_PREFIXES = ("validation_", "validation/", "valid_", "valid/", "val_", "val/", "val-", "va_",
                 "eval_", "eval/", "test_", "test/")
_TRAIN_PREFIXES = ("training_", "training/", "train_", "train/", "train-", "trn_", "tr_")
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
    "dsc": "dice",
    "dice_coefficient": "dice",
}
_CAMEL_RE = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]+)+$")  # trainLoss, valAcc, diceScore
_LR_RE = re.compile(r"^(lr|learning_rate|learning-rate|learningrate)([-_/].*)?$", re.IGNORECASE)

# Higher-is-better metrics ("scores") and lower-is-better ones ("losses"), recognised by name.
_SCORE_WORDS = ("accuracy", "acc", "iou", "miou", "jaccard", "dice", "f1", "fscore", "f_score",
                "fbeta", "auc", "auroc", "roc_auc", "auprc", "average_precision", "map",
                "precision", "recall", "sensitivity", "specificity", "kappa", "mcc", "r2",
                "top1", "top5", "top_1", "top_5", "bleu", "rouge", "correct", "dsc")
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
    >>> split_metric_key("valLoss"), split_metric_key("train_loss_batch")
    (('val', 'loss'), ('train', 'loss_batch'))
    """
    raw = name.strip()
    if _LR_RE.match(raw):
        return "lr", "lr"
    if _CAMEL_RE.match(raw):
        raw = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", raw)  # valLoss -> val_Loss
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
    for suf in ("_epoch", "_step", "_batch"):
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

