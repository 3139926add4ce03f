"""lossdiag.dask: one task per chunk, bitwise the sequential merge of the same chunks in order.

The reference is always a plain `Metrics` updated with the chunks one after the other, in C order
of their block index over the non-class axes; every comparison is bit for bit. Inputs: in-memory
Dask arrays, memory-mapped .npy files (one per image), a zarr store and lazily generated arrays,
on the threaded scheduler and on a 2-process `distributed.LocalCluster`.
"""

from __future__ import annotations

import doctest
import logging
import os
import threading
import warnings

import lossdiag
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
import lossdiag.dask as ldd  # noqa: E402
from dask.array.core import PerformanceWarning  # noqa: E402


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def sequential(kw: dict, x: np.ndarray, t: np.ndarray, chunks, cax: int | None,
               target_has_class_axis: bool = False) -> lossdiag.Metrics:
    """Metrics(**kw) updated chunk by chunk (C order over the non-class block grid)."""
    m = lossdiag.Metrics(**kw)
    bounds = [np.cumsum((0,) + tuple(c)) for c in chunks]
    grid = [len(c) for a, c in enumerate(chunks) if a != cax]
    for idx in np.ndindex(*grid):
        full = list(idx) if cax is None else list(idx[:cax]) + [0] + list(idx[cax:])
        sl = tuple(slice(b[i], b[i + 1]) for b, i in zip(bounds, full))
        tsl = sl if (cax is None or target_has_class_axis) else sl[:cax] + sl[cax + 1:]
        m.update(x[sl], t[tsl])
    return m


def assert_same_bits(a: lossdiag.Metrics, b: lossdiag.Metrics) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        assert sa[k].tobytes() == sb[k].tobytes(), k
    ra, rb = a.compute(), b.compute()
    assert np.array_equal(ra["loss"], rb["loss"], equal_nan=True)


def seg_data(seed: int = 0, N: int = 6, C: int = 4, H: int = 10, W: int = 12,
             dtype: type = np.float64):
    """float64 by default: sums of float32-derived terms are often exact in float64, which would
    make the order of the additions invisible."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(N, C, H, W)) * 2).astype(dtype)
    t = rng.integers(0, C, size=(N, H, W)).astype(np.int64)
    t[rng.random(t.shape) < 0.1] = 255
    return x, t


# ------------------------------------------------------------------------------------------------
# threaded scheduler
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_threads_seg_bitwise_sequential(split_every: int) -> None:
    x, t = seg_data()
    chunks = ((2, 2, 2), (4,), (4, 6), (5, 7))  # batch and both spatial axes split, uneven
    kw = dict(num_classes=4, ignore_index=255, top_k=(1, 2), bins=10)
    xd = da.from_array(x, chunks=chunks)
    td = da.from_array(t, chunks=(chunks[0], chunks[2], chunks[3]))
    got = ldd.evaluate(xd, td, ignore_index=255, top_k=(1, 2), bins=10, scheduler="threads",
                       split_every=split_every)
    assert isinstance(got, lossdiag.Metrics)
    ref = sequential(kw, x, t, chunks, cax=1)
    assert_same_bits(got, ref)
    # and the chunked sums are the one-pass sums to float tolerance, integers exactly
    one = lossdiag.Metrics(**kw)
    one.update(x, t)
    for k, v in one.state_dict().items():
        if k.endswith("_batches"):
            continue  # counts of update() calls, not of data: one pass is one batch
        g = got.state_dict()[k]
        if v.dtype.kind == "f":
            np.testing.assert_allclose(g, v, rtol=1e-12, atol=1e-9, err_msg=k)
        else:
            np.testing.assert_array_equal(g, v, err_msg=k)


def test_channels_last_weight_smoothing_and_misaligned_target() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 8, 5)).astype(np.float64)
    t = rng.integers(0, 5, size=(9, 8))
    kw = dict(num_classes=5, axis=-1, weight=[1.0, 0.5, 2.0, 1.0, 3.0], label_smoothing=0.1)
    xd = da.from_array(x, chunks=(4, 3, 5))
    td = da.from_array(t, chunks=(3, 8))  # other chunks than the logits: aligned to them
    got = ldd.evaluate(xd, td, scheduler="threads", **{k: v for k, v in kw.items()
                                                       if k != "num_classes"})
    assert_same_bits(got, sequential(kw, x, t, xd.chunks, cax=2))


def test_soft_targets_and_binary() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    p = rng.random((20, 3))
    t = (p / p.sum(1, keepdims=True)).astype(np.float32)
    got = ldd.evaluate(da.from_array(x, chunks=(6, 3)), da.from_array(t, chunks=(6, 3)),
                       scheduler="threads")
    ref = sequential(dict(num_classes=3), x, t, ((6, 6, 6, 2), (3,)), cax=1,
                     target_has_class_axis=True)
    assert_same_bits(got, ref)
    assert int(got.state_dict()["soft_batches"]) > 0
    xb = rng.normal(size=(5, 7, 6)).astype(np.float32)
    tb = (rng.random((5, 7, 6)) < 0.3).astype(np.float32)
    ch = ((2, 3), (4, 3), (6,))
    got = ldd.evaluate(da.from_array(xb, chunks=ch), da.from_array(tb, chunks=ch),
                       binary=True, pos_weight=1.5, scheduler="threads")
    assert_same_bits(got, sequential(dict(num_classes=2, binary=True, pos_weight=1.5), xb, tb,
                                     ch, cax=None))


def test_imagewise_rechunks_spatial_axes_with_a_warning() -> None:
    x, t = seg_data(3)
    xd = da.from_array(x, chunks=(2, 4, 5, 6))  # images split spatially
    td = da.from_array(t, chunks=(2, 5, 6))
    with pytest.warns(PerformanceWarning, match="whole images"):
        got = ldd.evaluate(xd, td, ignore_index=255, imagewise=True, scheduler="threads")
    kw = dict(num_classes=4, ignore_index=255, imagewise=True)
    ref = sequential(kw, x, t, ((2, 2, 2), (4,), (10,), (12,)), cax=1)
    assert_same_bits(got, ref)
    r = got.compute()
    assert 0.0 <= r["mean_iou_imagewise"] <= 1.0


def test_split_class_axis_rechunked_once_or_refused() -> None:
    x, t = seg_data(4)
    xd = da.from_array(x, chunks=(3, 2, 10, 12))  # the class axis split in two
    td = da.from_array(t, chunks=(3, 10, 12))
    with pytest.warns(PerformanceWarning, match="class axis"):
        got = ldd.evaluate(xd, td, ignore_index=255, scheduler="threads")
    ref = sequential(dict(num_classes=4, ignore_index=255), x, t,
                     ((3, 3), (4,), (10,), (12,)), cax=1)
    assert_same_bits(got, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to rechunk: no warning
        ldd.evaluate(xd.rechunk({1: -1}), td, ignore_index=255, scheduler="threads")
    with pytest.raises(ValueError, match=r"max_chunk_bytes.*rechunk"):
        ldd.evaluate(xd, td, ignore_index=255, max_chunk_bytes=1000)
    with pytest.raises(ValueError, match="max_chunk_bytes"):
        ldd.evaluate(xd, td, max_chunk_bytes=0)


def test_metrics_update_accepts_dask_and_appends_after_the_state() -> None:
    x, t = seg_data(5)
    kw = dict(num_classes=4, ignore_index=255, imagewise=True)
    x0, t0 = seg_data(6, N=2)
    chunks = ((1, 3, 2), (4,), (10,), (12,))
    m = lossdiag.Metrics(**kw)
    m.update(x0, t0)  # an in-memory batch first
    with dask.config.set(scheduler="threads"):
        alone = m.update(da.from_array(x, chunks=chunks), da.from_array(t, chunks=(
            chunks[0], chunks[2], chunks[3])))
    ref = sequential(kw, x, t, chunks, cax=1)
    assert_same_bits(alone, ref)
    ref0 = lossdiag.Metrics(**kw)
    ref0.update(x0, t0)
    bounds = np.cumsum((0,) + chunks[0])
    for i in range(3):
        ref0.update(x[bounds[i]:bounds[i + 1]], t[bounds[i]:bounds[i + 1]])
    assert_same_bits(m, ref0)
    # a NumPy target with Dask logits (and the other way round) is wrapped chunk for chunk
    m2 = lossdiag.Metrics(**kw)
    with dask.config.set(scheduler="threads"):
        m2.update(da.from_array(x, chunks=chunks), t)
        m3 = lossdiag.Metrics(**kw)
        m3.update(x, da.from_array(t, chunks=(chunks[0], chunks[2], chunks[3])))
    assert_same_bits(m2, ref)
    assert_same_bits(m3, ref)


def test_delayed_result_and_zero_size() -> None:
    x, t = seg_data(7)
    d = ldd.evaluate(da.from_array(x, chunks=(3, 4, 5, 12)), da.from_array(t, chunks=(3, 5, 12)),
                     ignore_index=255, compute=False)
    assert hasattr(d, "compute") and hasattr(d, "dask")
    m = d.compute(scheduler="sync")
    assert_same_bits(m, sequential(dict(num_classes=4, ignore_index=255), x, t,
                                   ((3, 3), (4,), (5, 5), (12,)), cax=1))
    e = ldd.evaluate(da.zeros((0, 4, 3, 3), dtype=np.float32, chunks=(1, 4, 3, 3)),
                     da.zeros((0, 3, 3), dtype=np.int64, chunks=(1, 3, 3)), scheduler="threads")
    assert e.compute()["count"] == 0


def test_bad_input() -> None:
    x, t = seg_data(8)
    xd, td = da.from_array(x, chunks=(3, 4, 10, 12)), da.from_array(t, chunks=(3, 10, 12))
    with pytest.raises(TypeError, match="neither is a Dask array"):
        ldd.update(lossdiag.Metrics(4), x, t)
    with pytest.raises(ValueError, match="target: expected shape"):
        ldd.evaluate(xd, td[:, :5])
    with pytest.raises(ValueError, match="num_classes=5"):
        ldd.evaluate(xd, td, num_classes=5)
    with pytest.raises(ValueError, match="axis"):
        ldd.evaluate(xd, td, axis=2)
    with pytest.raises(TypeError, match="dtype int64"):
        ldd.evaluate(xd.astype(np.int64), td)
    with pytest.raises(ValueError, match="split_every"):
        ldd.evaluate(xd, td, split_every=1)
    with pytest.raises(TypeError, match="metrics"):
        ldd.update(object(), xd, td)  # type: ignore[arg-type]
    xu = xd[xd[:, 0, 0, 0] > 0]  # unknown chunk sizes
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        ldd.evaluate(xu, td[:2])
    # a label outside [0, C) is found inside a task and raised as the usual ValueError
    bad = t.copy()
    bad[5, 3, 3] = 7
    with pytest.raises(ValueError, match="target"):
        ldd.evaluate(xd, da.from_array(bad, chunks=(3, 10, 12)), ignore_index=255,
                     scheduler="threads")


def test_docstring_example() -> None:
    assert lossdiag.dask is ldd  # also reachable as an attribute of the package
    res = doctest.testmod(ldd, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


# ------------------------------------------------------------------------------------------------
# out-of-core inputs: never loaded whole
# ------------------------------------------------------------------------------------------------
class Spy:
    """An array-like that records the size of every read (da.from_array calls __getitem__)."""

    def __init__(self, a: np.ndarray) -> None:
        self.a, self.shape, self.dtype, self.ndim = a, a.shape, a.dtype, a.ndim
        self.reads: list[int] = []
        self._lock = threading.Lock()

    def __getitem__(self, key):
        out = np.asarray(self.a[key])
        with self._lock:
            self.reads.append(out.size)
        return out


def test_memory_mapped_npy_per_image_is_read_chunk_by_chunk(tmp_path) -> None:
    x, t = seg_data(9, N=5, H=16, W=12, dtype=np.float32)
    for i in range(len(x)):
        np.save(tmp_path / f"logits_{i}.npy", x[i])
        np.save(tmp_path / f"target_{i}.npy", t[i])
    mm = [np.load(tmp_path / f"logits_{i}.npy", mmap_mode="r") for i in range(len(x))]
    spies = [Spy(a) for a in mm]
    xd = da.stack([da.from_array(s, chunks=(4, 8, 12)) for s in spies])
    td = da.stack([da.from_array(np.load(tmp_path / f"target_{i}.npy", mmap_mode="r"),
                                 chunks=(8, 12)) for i in range(len(x))])
    got = ldd.evaluate(xd, td, ignore_index=255, scheduler="threads")
    assert_same_bits(got, sequential(dict(num_classes=4, ignore_index=255), x, t,
                                     xd.chunks, cax=1))
    for s in spies:  # every read is one chunk (4 x 8 x 12), never an image, never the dataset
        assert s.reads and max(s.reads) <= 4 * 8 * 12, s.reads
        assert sum(s.reads) == s.a.size


def test_zarr_store(tmp_path) -> None:
    zarr = pytest.importorskip("zarr")
    x, t = seg_data(10, N=4)
    zx = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=x.shape, chunks=(1, 4, 5, 12),
                         dtype=x.dtype)
    zx[...] = x
    zt = zarr.open_array(str(tmp_path / "t.zarr"), mode="w", shape=t.shape, chunks=(1, 5, 12),
                         dtype=t.dtype)
    zt[...] = t
    xd, td = da.from_zarr(str(tmp_path / "x.zarr")), da.from_zarr(str(tmp_path / "t.zarr"))
    assert xd.numblocks == (4, 1, 2, 1)
    got = ldd.evaluate(xd, td, ignore_index=255, scheduler="threads")
    assert_same_bits(got, sequential(dict(num_classes=4, ignore_index=255), x, t,
                                     xd.chunks, cax=1))


def test_lazily_generated_blocks_are_made_one_at_a_time() -> None:
    made: list[tuple[int, ...]] = []
    lock = threading.Lock()

    def block(block_info=None):
        loc = block_info[None]["chunk-location"]
        shape = block_info[None]["chunk-shape"]
        with lock:
            made.append(shape)
        rng = np.random.default_rng(list(loc))
        return rng.normal(size=shape).astype(np.float32)

    chunks = ((2,) * 6, (4,), (8, 8), (16,))
    xd = da.map_blocks(block, chunks=chunks, dtype=np.float32)
    td = (da.random.default_rng(0).integers(0, 4, size=(12, 16, 16), chunks=(2, 8, 16)))
    got = ldd.evaluate(xd, td, scheduler="threads")
    assert len(made) == 12 and all(s == (2, 4, 8, 16) for s in made)
    x, t = xd.compute(scheduler="threads"), td.compute(scheduler="threads")
    assert_same_bits(got, sequential(dict(num_classes=4), x, t, chunks, cax=1))


# ------------------------------------------------------------------------------------------------
# distributed.LocalCluster with worker processes
# ------------------------------------------------------------------------------------------------
def test_local_cluster_two_worker_processes() -> None:
    distributed = pytest.importorskip("distributed")
    C, chunks = 5, ((3, 3, 2), (5,), (9, 7), (16,))
    rng = da.random.default_rng(42)
    xd = rng.standard_normal(size=(8, C, 16, 16), chunks=chunks, dtype=np.float64)
    td = da.random.default_rng(43).integers(0, C, size=(8, 16, 16), chunks=(3, 9, 16))
    kw = dict(ignore_index=3, top_k=(1, 3), imagewise=False)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    with cluster, distributed.Client(cluster) as client:
        got = ldd.evaluate(xd, td, scheduler=client, **kw)
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids
    x, t = xd.compute(scheduler="sync"), td.compute(scheduler="sync")
    ref = sequential(dict(num_classes=C, **kw), x, t, xd.chunks, cax=1)
    assert_same_bits(got, ref)
    assert_same_bits(ldd.evaluate(xd, td, scheduler="threads", **kw), ref)


def test_bench_scale_smoke(tmp_path) -> None:
    """bench/bench_scale.py runs on a tiny dataset and every mode ends with the same bits."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_scale.py"
    spec = importlib.util.spec_from_file_location("bench_scale", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "scale.json"
    assert mod.main(["--pixels", "2e6", "--repeat", "1", "--modes", "single-1t", "threads",
                     "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["same_bits"] and [r["mode"] for r in data["rows"]] == ["single-1t", "threads"]
    assert all(r["pixels"] == 2_000_000 and r["chunks"] == 2 for r in data["rows"])
