"""CPU benchmark of lossdiag's fused kernels (``lossdiag bench``).

One run times, on float32 logits,

* ``nchw``: a Pascal-VOC-like segmentation batch (N, 21, H, W) with ``axis=1``, uint8 labels and
  ~5 % of the pixels set to ``ignore_index=255``;
* ``nhwc``: the same data with the class axis last (N, H, W, 21), ``axis=-1``;
* ``cls``:  a (65536, 1000) classification batch with int64 labels;
* ``head``: a (1024, 1000) classification head, 4 MB, in cache (a training loop's many calls);
* ``vocab``: (1024, 32000) language-model rows (``evaluate`` returns per-class counts there,
  no (C, C) confusion matrix, and so do the baselines),

and for each case ``cross_entropy``, ``accuracy``, ``cross_entropy_grad`` (allocating, and in place
with ``out=`` a copy of the logits) and ``evaluate`` against

* an idiomatic, numerically stable NumPy implementation (the work a user would write by hand),
* PyTorch CPU (``F.cross_entropy``, autograd forward+backward, argmax, ``bincount``, ``histc``,
  ``histogram``)
  when torch is installed, with ``torch.set_num_threads`` equal to lossdiag's thread count,
* the memory limit measured in the same run: a multi-threaded read of a buffer the size of the
  logits (for loss / accuracy / evaluate) and a read+write copy (for the gradient).

Every lossdiag (and torch) result is checked against the NumPy result; a mismatch aborts the run
with exit status 2, so a fast but wrong kernel cannot produce a benchmark table.

``lossdiag bench`` (:func:`main`) ends with a summary for users: what was measured, the speed-ups
against NumPy and torch, the machine. The developer benchmark (bench/bench_core.py,
``main(developer=True)``) prints every timing and the performance targets (PASS/MISS) instead.

One module per concern; dependencies point one way, from top to bottom:

* ``cli``       -- the options, the run over the cases, what is printed and saved (``main``)
* ``runner``    -- ``Runner``: every timing and check of one case; retries of disturbed cases
* ``report``    -- the machine, the tables, the targets and the user summary
* ``results``   -- ``Row`` (one timing and its ratios) and the performance ``Target``s
* ``checks``    -- ``BenchmarkMismatch`` and the comparisons with the NumPy reference
* ``reference`` -- the NumPy and PyTorch baselines
* ``cases``     -- presets, data generators, ``Case``
* ``timing``    -- ``measure``, ``measure_paired``, the memory limit, other processes' load

>>> from lossdiag.benchmark import cases
>>> case = next(cases.iter_cases(cases.PRESETS["tiny"], ["cls"], seed=0))
>>> case.title
'cls (96, 10) float32 axis=1, labels int64, ignore_index=-100'
"""

from __future__ import annotations

from .checks import BenchmarkMismatch
from .cli import main
from .report import machine_info
from .timing import OtherLoad, measure, measure_paired

__all__ = ["BenchmarkMismatch", "OtherLoad", "machine_info", "main", "measure", "measure_paired"]
