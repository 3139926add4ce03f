"""Metrics.sync over torch.distributed: 2 and 4 gloo processes on the CPU.

Every rank evaluates its own shard (uneven batch counts, one rank with no data at all), calls
``sync`` and writes its state to disk. The parent process then checks that

* every rank holds bitwise the same state,
* equal bit for bit to one process merging the same shards in rank order (`Metrics.merge`),
* and equal to float tolerance (integers exactly) to one pass over the concatenated data,

for segmentation with ignore_index and imagewise statistics, channels-last logits with weights
and label smoothing, class-probability targets, and binary outputs. A configuration mismatch
must raise the same ValueError on every rank instead of hanging.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import lossdiag
import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():  # pragma: no cover
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

# batches per rank: rank 0 sees no data, the others uneven counts
BATCHES = {2: (0, 3), 4: (0, 3, 1, 2)}

SCENARIOS = {
    # name: (Metrics kwargs, data kind)
    "seg": (dict(num_classes=5, ignore_index=255, imagewise=True, top_k=(1, 2), bins=8), "seg"),
    "last": (dict(num_classes=4, axis=-1, weight=[1.0, 2.0, 0.5, 1.5], label_smoothing=0.1),
             "last"),
    "soft": (dict(num_classes=3, label_smoothing=0.05), "soft"),
    "binary": (dict(num_classes=2, binary=True, pos_weight=2.0, bins=10), "binary"),
}


def shard(kind: str, rank: int, world: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rank `rank`'s batches: deterministic, so the parent can rebuild them."""
    out = []
    for b in range(BATCHES[world][rank]):
        rng = np.random.default_rng([rank, b, len(kind)])
        if kind == "seg":
            x = rng.normal(size=(2, 5, 6, 7)) * 2  # float64: float32 sums are often exact
            t = rng.integers(0, 5, size=(2, 6, 7))
            t[rng.random(t.shape) < 0.2] = 255
            t[0, :, :] = np.where(t[0] == 4, 3, t[0])  # a class absent from one image
        elif kind == "last":
            x = rng.normal(size=(3, 5, 4)).astype(np.float64)
            t = rng.integers(0, 4, size=(3, 5))
        elif kind == "soft":
            x = rng.normal(size=(7, 3)).astype(np.float32)
            p = rng.random((7, 3))
            t = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        else:
            x = rng.normal(size=(11,)).astype(np.float32)
            t = (rng.random(11) < 0.4).astype(np.float32)
        out.append((x, t))
    return out


def _worker(rank: int, world: int, tmp: str) -> None:
    lossdiag.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    try:
        res: dict[str, np.ndarray] = {}
        for name, (kw, kind) in SCENARIOS.items():
            m = lossdiag.Metrics(**kw)
            for x, t in shard(kind, rank, world):
                m.update(x, t)
            assert m.sync() is m
            for k, v in m.state_dict().items():
                res[f"{name}/{k}"] = v
            res[f"{name}/_soft"] = np.array(int(m.state_dict()["soft_batches"]) > 0)
            res[f"{name}/_loss"] = np.array(m.compute()["loss"])
        if world == 4:  # a sub-group: ranks 1 and 3 only (new_group is called by every rank)
            sub = dist.new_group(ranks=[1, 3])
            if rank in (1, 3):
                kw, kind = SCENARIOS["seg"]
                m = lossdiag.Metrics(**kw)
                for x, t in shard(kind, rank, world):
                    m.update(x, t)
                m.sync(sub)
                for k, v in m.state_dict().items():
                    res[f"sub/{k}"] = v
        # a configuration that differs on one rank: the same ValueError everywhere, no hang
        m = lossdiag.Metrics(3, bins=20 if rank != world - 1 else 10)
        try:
            m.sync()
            res["mismatch"] = np.array("no error")
        except ValueError as exc:
            res["mismatch"] = np.array(str(exc))
        # the group still works after the refused sync
        m = lossdiag.Metrics(3)
        m.update(np.eye(3, dtype=np.float32) * (rank + 1), np.arange(3))
        m.sync()
        res["after/count"] = m.state_dict()["count"]
        np.savez(os.path.join(tmp, f"rank{rank}.npz"), **res)
    finally:
        dist.destroy_process_group()


def _run(world: int, tmp: str) -> list[dict[str, np.ndarray]]:
    import torch.multiprocessing as mp

    ctx = mp.spawn(_worker, args=(world, tmp), nprocs=world, join=False)
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:  # pragma: no cover - a hang is a failure, not a freeze
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{world} gloo ranks did not finish within 240 s")
    out = []
    for r in range(world):
        with np.load(os.path.join(tmp, f"rank{r}.npz")) as z:
            out.append({k: z[k] for k in z.files})
    return out


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("world", [2, 4])
def test_sync_gloo_same_bits(world: int, tmp_path) -> None:
    ranks = _run(world, str(tmp_path))
    for name, (kw, kind) in SCENARIOS.items():
        keys = sorted(k for k in ranks[0] if k.startswith(name + "/"))
        # 1. the same bits on every rank
        for r in range(1, world):
            for k in keys:
                assert _bits_equal(ranks[r][k], ranks[0][k]), (name, k, r)
        # 2. = one process merging the ranks' shards in rank order
        shards = [shard(kind, r, world) for r in range(world)]
        merged = lossdiag.Metrics(**kw)
        for r in range(world):
            mr = lossdiag.Metrics(**kw)
            for x, t in shards[r]:
                mr.update(x, t)
            merged.merge(mr)
        ref = merged.state_dict()
        for k, v in ref.items():
            assert _bits_equal(ranks[0][f"{name}/{k}"], v), (name, k)
        assert bool(ranks[0][f"{name}/_soft"]) == (kind == "soft")
        # 3. = one pass over the concatenated data (to float tolerance; integers exactly)
        xs = [x for s in shards for x, _ in s]
        ts = [t for s in shards for _, t in s]
        one = lossdiag.Metrics(**kw)
        one.update(np.concatenate(xs), np.concatenate(ts))
        for k, v in one.state_dict().items():
            if k.endswith("_batches"):
                continue  # counts of update() calls, not of data: one pass is one batch
            got = ranks[0][f"{name}/{k}"]
            if v.dtype.kind == "f":
                np.testing.assert_allclose(got, v, rtol=1e-12, atol=1e-9, err_msg=f"{name}/{k}")
            else:
                np.testing.assert_array_equal(got, v, err_msg=f"{name}/{k}")
        assert float(ranks[0][f"{name}/_loss"]) == pytest.approx(one.compute()["loss"], rel=1e-12)
    if world == 4:
        kw, kind = SCENARIOS["seg"]
        ref = lossdiag.Metrics(**kw)
        for r in (1, 3):
            mr = lossdiag.Metrics(**kw)
            for x, t in shard(kind, r, world):
                mr.update(x, t)
            ref.merge(mr)
        for k, v in ref.state_dict().items():
            assert _bits_equal(ranks[1][f"sub/{k}"], v), k
            assert _bits_equal(ranks[3][f"sub/{k}"], v), k
        assert not any(k.startswith("sub/") for k in ranks[0])
    for r in range(world):
        msg = str(ranks[r]["mismatch"])
        assert "different Metrics configuration" in msg and "bins" in msg, msg
        assert msg == str(ranks[0]["mismatch"])
        assert int(ranks[r]["after/count"]) == 3 * world


def test_sync_needs_an_initialised_group() -> None:
    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is already initialised in this process")
    m = lossdiag.Metrics(3)
    with pytest.raises(RuntimeError, match="init_process_group"):
        m.sync()


def test_sync_single_rank_is_identity(tmp_path) -> None:
    """World size 1 in this process: sync leaves the state bit for bit as it was."""
    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1, timeout=timedelta(seconds=30))
    try:
        rng = np.random.default_rng(5)
        m = lossdiag.Metrics(4, imagewise=True)
        m.update(rng.normal(size=(3, 4, 5, 5)).astype(np.float32),
                 rng.integers(0, 4, size=(3, 5, 5)))
        before = m.state_dict()
        r0 = m.compute()
        m.sync()
        for k, v in m.state_dict().items():
            assert _bits_equal(v, before[k]), k
        assert m.compute()["loss"] == r0["loss"]
        with pytest.raises(TypeError, match="metrics"):
            from lossdiag import distributed

            distributed.sync(object())  # type: ignore[arg-type]
    finally:
        dist.destroy_process_group()


def test_import_lossdiag_does_not_import_torch_or_dask() -> None:
    import subprocess
    import sys

    code = ("import sys, lossdiag; m = lossdiag.Metrics(3); "
            "bad = [k for k in ('torch', 'dask', 'distributed') if k in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
