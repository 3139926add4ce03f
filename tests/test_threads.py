"""Determinism: bitwise identical results for 1, 2 and 3 threads and across repeated calls.

(The only place where the kernel is compared with itself.)"""

from __future__ import annotations

import dataclasses

import lossdiag as ld
import numpy as np
import pytest
from conftest import make_case, make_soft

THREADS = [1, 2, 3]


def bits(v):
    """A bitwise-comparable representation of a result (float, array, dict, dataclass, tuple)."""
    if v is None:
        return None
    if dataclasses.is_dataclass(v):
        return {f.name: bits(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {k: bits(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return tuple(bits(x) for x in v)
    if isinstance(v, (float, np.floating)):
        return ("f", np.float64(v).tobytes())
    if isinstance(v, (int, np.integer, bool, str)):
        return ("i", v)
    a = np.asarray(v)
    return ("a", a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes())


def assert_bitwise_equal(a, b, what=""):
    ba, bb = bits(a), bits(b)
    if ba != bb:
        if isinstance(ba, dict):
            diff = [k for k in ba if ba[k] != bb.get(k)]
            raise AssertionError(f"{what}: fields differ: {diff}")
        raise AssertionError(f"{what}: results differ: {a!r} vs {b!r}")


@pytest.fixture(scope="module")
def data():
    # big enough to be split over several threads and SIMD tails (odd sizes)
    x, y = make_case((5, 21, 67, 59), 1, seed=60, label_dtype=np.uint8, ignore_index=255)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    soft = make_soft((5, 21, 17, 13), 1, seed=61)
    xs, _ = make_case((5, 21, 17, 13), 1, seed=61)
    xc, yc = make_case((30011, 10), 1, seed=62)
    yb = (np.random.default_rng(63).random(xc.shape) < 0.4)
    return dict(x=x, y=y, xl=xl, soft=soft, xs=xs, xc=xc, yc=yc, yb=yb)


def run_all(d, dtype):
    x = d["x"].astype(dtype)
    xl = d["xl"].astype(dtype)
    xc = d["xc"].astype(dtype)
    xs = d["xs"].astype(dtype)
    y, yc = d["y"], d["yc"]
    w = np.linspace(0.3, 2.0, 21)
    res = {}
    for red in ("mean", "sum", "none"):
        for name, kw in {"plain": dict(ignore_index=255),
                         "w_ls": dict(ignore_index=255, weight=w, label_smoothing=0.1)}.items():
            res[f"ce_{red}_{name}"] = ld.cross_entropy(x, y, reduction=red, **kw)
            res[f"ce_last_{red}_{name}"] = ld.cross_entropy(xl, y, axis=-1, reduction=red, **kw)
            res[f"grad_{red}_{name}"] = ld.cross_entropy_grad(x, y, reduction=red, **kw)
        res[f"ce2d_{red}"] = ld.cross_entropy(xc, yc, reduction=red)
        res[f"grad2d_{red}"] = ld.cross_entropy_grad(xc, yc, reduction=red)
        res[f"soft_{red}"] = ld.cross_entropy_grad(xs, d["soft"].astype(dtype), reduction=red,
                                                   label_smoothing=0.05)
        res[f"bce_{red}"] = ld.binary_cross_entropy_grad(xc, d["yb"].astype(dtype),
                                                         reduction=red,
                                                         pos_weight=np.linspace(1, 3, 10))
    for k in (1, 5):
        res[f"acc_{k}"] = ld.accuracy(x, y, top_k=k, ignore_index=255)
        res[f"acc_last_{k}"] = ld.accuracy(xl, y, axis=-1, top_k=k, ignore_index=255)
    res["bacc"] = ld.binary_accuracy(xc, d["yb"].astype(dtype))
    res["eval"] = ld.evaluate(x, y, ignore_index=255, top_k=(1, 5), bins=15, per_sample=True,
                              grad=True, weight=w, label_smoothing=0.1)
    res["eval_last"] = ld.evaluate(xl, y, axis=-1, ignore_index=255, per_sample=True)
    res["eval2d"] = ld.evaluate(xc, yc, top_k=(1, 3), grad=True)
    # without per-sample statistics: the pending-run path (several runs per segment)
    res["eval_runs"] = ld.evaluate(x, y, ignore_index=255, top_k=(1, 5), bins=20)
    res["eval_runs_last"] = ld.evaluate(xl, y, axis=-1, ignore_index=255, bins=30)
    res["eval_binary"] = ld.evaluate_binary(xc, d["yb"].astype(dtype), grad=True,
                                            pos_weight=np.linspace(1, 3, 10))
    return res


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64],
                         ids=lambda d: np.dtype(d).name)
def test_bitwise_identical_across_thread_counts(data, dtype, restore_threads):
    results = {}
    for n in THREADS:
        ld.set_num_threads(n)
        assert ld.get_num_threads() == n
        results[n] = run_all(data, dtype)
    for n in THREADS[1:]:
        for key in results[1]:
            assert_bitwise_equal(results[1][key], results[n][key], f"{key} threads=1 vs {n}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_bitwise_identical_repeated_calls(data, dtype, restore_threads):
    ld.set_num_threads(2)
    first = run_all(data, dtype)
    for _ in range(2):
        again = run_all(data, dtype)
        for key in first:
            assert_bitwise_equal(first[key], again[key], f"{key} repeated")


def test_metrics_bitwise_across_threads(data, restore_threads):
    out = {}
    for n in THREADS:
        ld.set_num_threads(n)
        m = ld.Metrics(21, ignore_index=255, top_k=(1, 5), imagewise=True)
        for i in range(0, 5, 2):
            m.update(data["x"][i:i + 2].astype(np.float32), data["y"][i:i + 2])
        out[n] = (m.state_dict(), m.compute())
    for n in THREADS[1:]:
        assert_bitwise_equal(out[1][0], out[n][0], f"state_dict threads=1 vs {n}")
        assert_bitwise_equal(out[1][1], out[n][1], f"compute threads=1 vs {n}")


def test_set_num_threads_restored(restore_threads):
    n0 = restore_threads
    ld.set_num_threads(1)
    assert ld.get_num_threads() == 1
    ld.set_num_threads(n0)
    assert ld.get_num_threads() == n0
