"""The benchmark inputs: presets (shapes and repeat counts), data generators and the cases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Shapes and repeat counts of the three presets.  "tiny" exists for the smoke test only.
# Every timed block first warms up for at least ``warmup`` calls *and* ``min_warmup_s`` seconds,
# then times at least ``repeats`` calls *and* ``min_time_s`` seconds of calls (at most
# timing.MAX_CALLS_PER_REPEAT * repeats): on a 2-vCPU VM a multi-threaded call made right after a
# single-threaded stretch (the NumPy baseline) or an idle one can run ~15 % slower for ~0.2 s
# while the idle vCPU comes back (bench/README.md), which a fixed count of fast calls does not
# cover, and the median of a few fast calls samples only ~0.1 s of a machine whose speed drifts.
# "head" is the same shape in quick and full: a (1024, 1000) float32 classification head is 4 MB
# and stays in cache, as in a training loop that calls the metrics thousands of times.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"seg": (8, 21, 512, 512), "cls": (65536, 1000), "head": (1024, 1000),
             "vocab": (1024, 32000), "repeats": 7, "warmup": 1, "min_warmup_s": 0.5,
             "min_time_s": 1.0},
    "quick": {"seg": (4, 21, 256, 256), "cls": (16384, 1000), "head": (1024, 1000),
              "vocab": (256, 32000), "repeats": 3, "warmup": 1, "min_warmup_s": 0.2,
              "min_time_s": 0.3},
    "tiny": {"seg": (2, 5, 16, 24), "cls": (96, 10), "head": (16, 12), "vocab": (4, 3000),
             "repeats": 2, "warmup": 1, "min_warmup_s": 0.0, "min_time_s": 0.0},
}
CASES = ("nchw", "nhwc", "cls", "head", "vocab")  # in the order they run
SEG_IGNORE = 255
CLS_IGNORE = -100
# What the user summary calls each case.
CASE_NAMES = {"nchw": "segmentation, channels first", "nhwc": "segmentation, channels last",
              "cls": "classification", "head": "classification head, in cache",
              "vocab": "language-model vocabulary"}


@dataclass
class Case:
    """One benchmark input: logits, labels and how to interpret them."""

    name: str
    logits: np.ndarray
    target: np.ndarray
    axis: int
    ignore_index: int

    @property
    def num_classes(self) -> int:
        """Size of the class axis."""
        return int(self.logits.shape[self.axis])

    @property
    def title(self) -> str:
        """Human readable description of the case."""
        return (f"{self.name} {tuple(self.logits.shape)} {self.logits.dtype} axis={self.axis}, "
                f"labels {self.target.dtype}, ignore_index={self.ignore_index}")


def make_segmentation(rng: np.random.Generator, shape: tuple[int, ...],
                      ignore_frac: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """VOC-like NCHW float32 logits and uint8 labels (70 % background, ``ignore_frac`` = 255).

    The true class gets a +4 boost on 75 % of the pixels so accuracy and the histograms look like a
    half-trained model rather than noise.
    """
    n, c, h, w = shape
    probs = np.full(c, 0.3 / (c - 1))
    probs[0] = 0.7
    labels = rng.choice(c, size=(n, h, w), p=probs).astype(np.uint8)
    logits = rng.standard_normal((n, c, h, w), dtype=np.float32)
    logits *= 2.0
    idx = labels[:, None].astype(np.intp)
    boost = (rng.random((n, 1, h, w), dtype=np.float32) < 0.75).astype(np.float32) * 4.0
    np.put_along_axis(logits, idx, np.take_along_axis(logits, idx, 1) + boost, 1)
    labels[rng.random((n, h, w)) < ignore_frac] = SEG_IGNORE
    return logits, labels


def make_classification(rng: np.random.Generator,
                        shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) float32 logits and int64 labels; the true class is boosted on 60 % of the rows."""
    n, c = shape
    labels = rng.integers(0, c, size=n, dtype=np.int64)
    logits = rng.standard_normal((n, c), dtype=np.float32)
    logits *= 2.0
    rows = np.arange(n)
    logits[rows, labels] += (rng.random(n, dtype=np.float32) < 0.6) * np.float32(5.0)
    return logits, labels


def iter_cases(preset: dict[str, Any], names: list[str], seed: int):  # noqa: ANN202
    """Yield the requested cases one at a time (NHWC is built from NCHW, which is then freed).

    >>> for case in iter_cases(PRESETS["tiny"], ["head", "vocab"], seed=0):
    ...     print(case.title)
    head (16, 12) float32 axis=1, labels int64, ignore_index=-100
    vocab (4, 3000) float32 axis=1, labels int64, ignore_index=-100
    """
    rng = np.random.default_rng(seed)
    if "nchw" in names or "nhwc" in names:
        logits, labels = make_segmentation(rng, preset["seg"])
        if "nchw" in names:
            yield Case("nchw", logits, labels, 1, SEG_IGNORE)
        if "nhwc" in names:
            nhwc = np.ascontiguousarray(logits.transpose(0, 2, 3, 1))
            del logits
            yield Case("nhwc", nhwc, labels, -1, SEG_IGNORE)
            del nhwc
        else:
            del logits
    for name in ("cls", "head", "vocab"):  # (N, C) rows with int64 labels, built like "cls"
        if name in names:
            logits, labels = make_classification(rng, preset[name])
            yield Case(name, logits, labels, 1, CLS_IGNORE)
            del logits, labels
