"""lossdiag.accuracy (top-1 and top-k) against the reference."""

from __future__ import annotations

import math

import lossdiag as ld
import numpy as np
import pytest
import reference as R
from conftest import (
    FLOAT_DTYPES,
    LABEL_DTYPES,
    SHAPES,
    cast_logits,
    make_case,
    make_soft,
    num_classes,
    reduced_value,
    shape_id,
    target_shape,
    to_backend,
)


def acc(backend, x, y, **kw):
    return reduced_value(ld.accuracy(to_backend(x, backend), to_backend(y, backend), **kw))


def same(got, ref):
    if math.isnan(ref):
        assert math.isnan(got)
    else:
        # a ratio of two integers computed once: allow one rounding
        assert got == pytest.approx(ref, rel=1e-15, abs=0), (got, ref)


@pytest.mark.parametrize("case", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_accuracy_shapes_dtypes(backend, case, dtype):
    shape, axis = case
    x64, y = make_case(shape, axis, seed=shape[axis] + 50)
    x, xr = cast_logits(x64, dtype)
    C = num_classes(shape, axis)
    for k in sorted({1, 2, 5, C}):
        if k > C:
            continue
        same(acc(backend, x, y, axis=axis, top_k=k), R.ref_accuracy(xr, y, axis=axis, top_k=k))


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ignore_index", [-100, 0, 255, 3])
def test_accuracy_label_dtypes_ignore(backend, label_dtype, ignore_index):
    x, y = make_case((6, 10, 5, 5), 1, seed=51, label_dtype=label_dtype,
                     ignore_index=ignore_index, frac_ignored=0.3)
    for k in (1, 3):
        same(acc(backend, x, y, top_k=k, ignore_index=ignore_index),
             R.ref_accuracy(x, y, top_k=k, ignore_index=ignore_index))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("axis", [1, -1])
def test_accuracy_ties(backend, dtype, axis):
    """Ties: top-1 is the first index of the max (numpy argmax); top-k stable descending order."""
    r = np.random.default_rng(52)
    shape = (40, 6, 7) if axis == 1 else (40, 7, 6)
    x64 = r.integers(-2, 3, size=shape).astype(np.float64)  # very many ties
    y = r.integers(0, 6, size=target_shape(shape, axis))
    x, xr = cast_logits(x64, dtype)
    for k in range(1, 7):
        same(acc(backend, x, y, axis=axis, top_k=k), R.ref_accuracy(xr, y, axis=axis, top_k=k))
    # all equal logits: top-k correct iff label < k
    z = np.zeros((12, 6), dtype)
    yz = np.arange(12) % 6
    for k in range(1, 7):
        assert acc(backend, z, yz, top_k=k) == np.mean(yz < k)


def test_accuracy_top1_equals_numpy_argmax(backend):
    r = np.random.default_rng(53)
    x = np.round(r.normal(size=(500, 8)), 0).astype(np.float32)
    y = r.integers(0, 8, 500)
    assert acc(backend, x, y) == np.mean(np.argmax(x, axis=1) == y)


def test_accuracy_nonfinite(backend):
    x = np.zeros((6, 4))
    y = np.array([0, 1, 2, 3, 0, 1])
    x[:, :] = np.arange(4)[::-1]  # class 0 best
    x[0, 2] = np.nan  # NaN row: wrong even though the label is the max
    x[1, 1] = np.inf  # +inf at the target: correct
    x[2, 0] = -np.inf
    x[2, 1] = -np.inf  # -inf masks: class 2 now best
    x[3, 0] = np.inf  # +inf elsewhere: wrong
    for k in (1, 2, 4):
        same(acc(backend, x, y, top_k=k), R.ref_accuracy(x, y, top_k=k))
    assert acc(backend, x, y) == 3 / 6  # rows 1, 2, 4


@pytest.mark.parametrize("case", [((20, 5), 1), ((2, 4, 3, 5), 1), ((2, 3, 4, 6), -1)],
                         ids=shape_id)
def test_accuracy_soft_targets(backend, case):
    shape, axis = case
    x, _ = make_case(shape, axis, seed=54)
    t = make_soft(shape, axis, seed=54)
    for k in (1, 2):
        same(acc(backend, x, t, axis=axis, top_k=k), R.ref_accuracy(x, t, axis=axis, top_k=k))
    y = np.random.default_rng(56).integers(0, shape[axis], size=target_shape(shape, axis))
    oh = np.moveaxis(np.eye(shape[axis])[y], -1, axis % len(shape)).astype(np.float32)
    same(acc(backend, x, oh, axis=axis), R.ref_accuracy(x, y, axis=axis))


def test_accuracy_empty_and_all_ignored(backend):
    assert math.isnan(acc(backend, np.zeros((0, 3)), np.zeros(0, np.int64)))
    assert math.isnan(acc(backend, np.zeros((4, 3)), np.full(4, -100)))
    assert math.isnan(acc(backend, np.zeros((0, 3, 2, 2), np.float32),
                          np.zeros((0, 2, 2), np.uint8)))


def test_accuracy_large(backend):
    x, y = make_case((8, 21, 128, 128), 1, seed=57, label_dtype=np.uint8, ignore_index=255)
    x = x.astype(np.float32)
    for k in (1, 5):
        same(acc(backend, x, y, top_k=k, ignore_index=255),
             R.ref_accuracy(x.astype(np.float64), y, top_k=k, ignore_index=255))
