"""lossdiag.torchmetrics: torchmetrics.Metric states that are lossdiag.Metrics sums.

In one process ``compute()`` equals ``lossdiag.Metrics.compute()`` bit for bit; across processes
(a real 2-process gloo group) the states are summed by torchmetrics' own sync.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import lossdiag
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lossdiag.torchmetrics import ClassificationStats, LossdiagStats, SegmentationStats

# torch and torchmetrics are in the `test` extra: these tests run (never skip) in CI.


def _same(a, b, path="") -> None:
    """Bit-for-bit equality of two compute() results (NaN == NaN)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == np.asarray(b).dtype and a.shape == np.asarray(b).shape, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or a == b, (path, a, b)
    else:
        assert a == b, path


def _seg_batches(seed: int, n: int = 4, C: int = 5):
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n):
        x = (rng.normal(size=(3, C, 9, 7)) * 3).astype(np.float32)
        y = rng.integers(0, C, size=(3, 9, 7))
        y[0, :2] = 255  # ignored pixels
        if b == 1:
            y[y == 4] = 0  # a class absent from a batch
        out.append((x, y))
    return out


CASES = {
    "segmentation": (dict(num_classes=5, ignore_index=255, imagewise=True, bins=16), "seg"),
    "weighted+smoothing": (dict(num_classes=5, ignore_index=255, label_smoothing=0.1,
                                weight=[1.0, 2.0, 0.5, 1.0, 3.0], top_k=(1, 3)), "seg"),
    "absent=one": (dict(num_classes=5, ignore_index=255, absent="one"), "seg"),
    "channels-last": (dict(num_classes=5, axis=-1, ignore_index=255), "seg-nhwc"),
    "classification": (dict(num_classes=4, top_k=(1, 2)), "cls"),
    "soft-targets": (dict(num_classes=4), "soft"),
    "binary": (dict(num_classes=2, binary=True, pos_weight=2.0, threshold=0.5), "bin"),
}


def _batches(kind: str):
    rng = np.random.default_rng(7)
    if kind == "seg":
        return _seg_batches(0)
    if kind == "seg-nhwc":
        return [(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y) for x, y in _seg_batches(1)]
    if kind == "cls":
        return [(rng.normal(size=(16, 4)).astype(np.float32), rng.integers(0, 4, 16))
                for _ in range(3)]
    if kind == "soft":
        return [(rng.normal(size=(16, 4)).astype(np.float32),
                 rng.dirichlet(np.ones(4), 16).astype(np.float32)) for _ in range(3)]
    if kind == "bin":
        return [(rng.normal(size=(16, 6)).astype(np.float32),
                 rng.integers(0, 2, (16, 6)).astype(np.float32)) for _ in range(3)]
    raise AssertionError(kind)


@pytest.mark.parametrize("case", sorted(CASES))
def test_compute_equals_metrics_bit_for_bit(case):
    kwargs, kind = CASES[case]
    absent = kwargs.pop("absent", "nan") if "absent" in kwargs else "nan"
    kwargs = dict(kwargs)
    tm_kwargs = dict(kwargs, absent=absent)
    if "weight" in kwargs:
        tm_kwargs["weight"] = torch.tensor(kwargs["weight"])  # tensors are accepted too
    cls = SegmentationStats if kind.startswith("seg") else ClassificationStats
    tm = cls(**tm_kwargs)
    ref = lossdiag.Metrics(**kwargs)
    for x, y in _batches(kind):
        tm.update(torch.from_numpy(x), torch.from_numpy(y))
        ref.update(x, y)
    _same(tm.compute(), ref.compute(absent=absent))
    # the states are the Metrics state dict, value for value
    for k, v in ref.state_dict().items():
        assert np.array_equal(getattr(tm, k).numpy(), v), k
    _same(tm.to_metrics().compute(absent=absent), ref.compute(absent=absent))


def test_forward_reset_and_tensor_inputs():
    batches = _seg_batches(3)
    tm = SegmentationStats(num_classes=5, ignore_index=255)
    ref = lossdiag.Metrics(5, ignore_index=255)
    for i, (x, y) in enumerate(batches):
        xt = torch.from_numpy(x).requires_grad_(i == 0)  # a tensor that requires grad
        batch_value = tm(xt, torch.from_numpy(y))  # forward: this batch alone, and accumulate
        one = lossdiag.Metrics(5, ignore_index=255)
        one.update(x, y)
        _same(batch_value, one.compute())
        ref.update(x, y)
    _same(tm.compute(), ref.compute())
    assert tm.last_result is not None and tm.last_result["count"] == ref.compute()["count"]
    tm.reset()
    assert int(tm.count) == 0 and int(tm.confusion.sum()) == 0
    # CPU bfloat16 logits are read after an upcast to float32
    x, y = batches[0]
    tm.update(torch.from_numpy(x).to(torch.bfloat16), torch.from_numpy(y))
    ref = lossdiag.Metrics(5, ignore_index=255)
    ref.update(torch.from_numpy(x).to(torch.bfloat16).float().numpy(), y)
    _same(tm.compute(), ref.compute())


def test_scalars_and_state_names():
    tm = ClassificationStats(num_classes=3, top_k=(1, 2))
    tm.update(torch.tensor([[3.0, 0, 0], [0, 0, 2.0], [0, 1.0, 0]]), torch.tensor([0, 1, 1]))
    s = tm.scalars(prefix="val_")
    assert s["val_accuracy"] == pytest.approx(2 / 3) and "val_top2_accuracy" in s
    assert all(type(v) is float for v in s.values())
    assert set(tm.metric_state) == set(lossdiag.Metrics(3, top_k=(1, 2)).state_dict())
    assert all(tm._reductions[k] is not None for k in tm.metric_state)  # all summed in DDP
    sd = tm.state_dict()  # torch module state dict: states are not persistent by default
    assert isinstance(sd, dict)


def test_merge_state_is_the_sum_of_the_parts():
    batches = _seg_batches(5, n=6)
    a = SegmentationStats(num_classes=5, ignore_index=255)
    b = SegmentationStats(num_classes=5, ignore_index=255)
    ref = lossdiag.Metrics(5, ignore_index=255)
    for i, (x, y) in enumerate(batches):
        (a if i % 2 else b).update(torch.from_numpy(x), torch.from_numpy(y))
        ref.update(x, y)
    a.merge_state(b)
    got, want = a.compute(), ref.compute()
    assert np.array_equal(got["confusion"], want["confusion"])
    assert got["count"] == want["count"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-12)
    assert got["ece"] == pytest.approx(want["ece"], rel=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="absent"):
        SegmentationStats(num_classes=3, absent="ignore")
    with pytest.raises(TypeError, match="num_classes"):
        ClassificationStats(num_classes=2.5)
    with pytest.raises(ValueError, match="bins"):
        ClassificationStats(num_classes=2, binary=True, bins=0)
    tm = ClassificationStats(num_classes=3)
    with pytest.raises(ValueError, match="3 classes|num_classes"):
        tm.update(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
    assert issubclass(SegmentationStats, LossdiagStats)


# ------------------------------------------------------------------------------------------------
# a real distributed sync: 2 processes, gloo, each updating its own shard
# ------------------------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        tm = SegmentationStats(num_classes=5, ignore_index=255, imagewise=True)
        for i, (x, y) in enumerate(_seg_batches(11, n=6)):
            if i % world == rank:
                tm.update(torch.from_numpy(x), torch.from_numpy(y))
        r = tm.compute()  # torchmetrics gathers and sums the states of both processes
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), confusion=r["confusion"],
                 count=r["count"], loss=r["loss"], ece=r["ece"], miou=r["mean_iou"],
                 miou_img=r["mean_iou_imagewise"])
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method and file:// rendezvous")
def test_ddp_sync_sums_the_states(tmp_path: Path):
    world = 2
    # fork: the children inherit the imported modules (a spawn re-imports torch in each)
    mp.start_processes(_ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path)),
                       nprocs=world, join=True, start_method="fork")
    ref = lossdiag.Metrics(5, ignore_index=255, imagewise=True)
    for x, y in _seg_batches(11, n=6):
        ref.update(x, y)
    want = ref.compute()
    for rank in range(world):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert np.array_equal(got["confusion"], want["confusion"])
        assert int(got["count"]) == want["count"]
        for k, w in (("loss", want["loss"]), ("ece", want["ece"]), ("miou", want["mean_iou"]),
                     ("miou_img", want["mean_iou_imagewise"])):
            assert float(got[k]) == pytest.approx(w, rel=1e-12), k
