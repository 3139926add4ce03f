"""`Metrics` across the ranks of a torch.distributed process group, with the same bits everywhere.

``Metrics.sync(group)`` (or ``lossdiag.distributed.sync(metrics, group)``) replaces each rank's
local state by the state of all ranks of the group:

* integer counts (confusion matrix, histograms, counts) are summed with one ``all_reduce``:
  integer addition is exact and associative, so the arrival order cannot matter;
* floating sums (loss sums, confidence sums, per-image IoU/Dice sums, ...) are gathered with
  ``all_gather`` and added on every rank **in rank order**, starting from zero: exactly what
  ``Metrics(...)`` followed by ``.merge(m_0)``, ``.merge(m_1)``, ... does in one process.

So after ``sync`` every rank holds bitwise the same state, equal to merging the ranks' states in
rank order, whatever the backend (gloo, NCCL, MPI) and whatever order messages arrive in.

The state is O(C^2 + bins): the cost is one small collective per ``sync`` (call it once per
evaluation, not per batch). With the NCCL backend the packed buffers go to
``torch.cuda.current_device()`` for the collectives (NCCL only moves device memory); a `Metrics`
that accumulated GPU batches keeps its sums on the device until this point, so ``sync`` is its one
device-to-host synchronisation. torch is imported only when this module is used.

Example (two processes on the CPU; each rank evaluates its own shard)::

    import numpy as np, torch.distributed as dist, lossdiag
    dist.init_process_group("gloo")            # torchrun sets RANK / WORLD_SIZE / MASTER_ADDR
    m = lossdiag.Metrics(19, ignore_index=255)
    for logits, target in my_shard_of_the_data:  # any number of batches, possibly none
        m.update(logits, target)
    m.sync()                                   # collective: every rank must call it
    print(m.compute()["mean_iou"])             # the same bits on every rank
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from .core.metrics import Metrics

_VERSION = 1
_HEADER = ("version", "num_classes", "bins", "binary", "imagewise", "top_k", "label_smoothing",
           "weight", "ignore_index", "pos_weight/threshold", "n_int", "n_float", "soft")
_SOFT_UNKNOWN = -1  # a rank that saw no data has no opinion on soft targets


def _torch_dist() -> tuple[Any, Any]:
    try:
        import torch
        import torch.distributed as dist
    except ImportError as exc:  # pragma: no cover - torch is in the test extra
        raise ImportError("Metrics.sync needs PyTorch: pip install torch") from exc
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call "
                           "torch.distributed.init_process_group(...) on every rank before sync()")
    return torch, dist


def _keys(state: dict[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """The integer and floating keys of a state, in a fixed (sorted) order."""
    ints = sorted(k for k, v in state.items() if np.asarray(v).dtype.kind in "iu")
    floats = sorted(k for k, v in state.items() if np.asarray(v).dtype.kind == "f")
    other = set(state) - set(ints) - set(floats)
    if other:  # pragma: no cover - every state entry is an int64 or float64 sum
        raise TypeError(f"metrics: state entries {sorted(other)} are neither integer nor float")
    return ints, floats


def _pack(state: dict[str, np.ndarray], keys: list[str], dtype: type) -> np.ndarray:
    if not keys:
        return np.zeros(0, dtype)
    return np.concatenate([np.asarray(state[k], dtype).reshape(-1) for k in keys])


def _unpack(flat: np.ndarray, like: dict[str, np.ndarray], keys: list[str],
            out: dict[str, np.ndarray]) -> None:
    o = 0
    for k in keys:
        ref = np.asarray(like[k])
        n = ref.size
        out[k] = flat[o:o + n].reshape(ref.shape).astype(ref.dtype, copy=True)
        o += n


def _crc(a: Any) -> int:
    return zlib.crc32(np.ascontiguousarray(a).tobytes())


def _header(m: Metrics, n_int: int, n_float: int, soft: int) -> np.ndarray:
    w = m.options.get("weight")
    if w is not None:
        w = np.asarray(w.get() if hasattr(w, "get") and not isinstance(w, np.ndarray) else w,
                       np.float64)
    bopts = m.binary_options.get("pos_weight"), m.binary_options.get("threshold")
    pw = bopts[0]
    if pw is not None:
        pw = np.asarray(pw.get() if hasattr(pw, "get") and not isinstance(pw, np.ndarray)
                        else pw, np.float64)
    return np.array([
        _VERSION, m.num_classes, m.bins, int(m.binary), int(m.imagewise),
        _crc(np.asarray(m.top_k, np.int64)),
        int(np.float64(m.options.get("label_smoothing", 0.0)).view(np.int64)),
        -1 if w is None else _crc(w),
        int(m.options.get("ignore_index", -100)),
        _crc(np.array([-1 if pw is None else _crc(pw), float(bopts[1])], np.float64)),
        n_int, n_float, soft,
    ], np.int64)


def _device(torch: Any, dist: Any, group: Any) -> Any:
    """Where the collective buffers must live: the current CUDA device for NCCL, else the CPU
    (gloo, MPI, and the CPU half of a "cpu:gloo,cuda:nccl" group)."""
    backend = str(dist.get_backend(group)).lower()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_gather(torch: Any, dist: Any, group: Any, a: np.ndarray, dev: Any,
                world: int) -> list[np.ndarray]:
    t = torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t, group=group)
    return [p.cpu().numpy() for p in parts]


def global_state(metrics: Metrics, group: Any = None) -> tuple[dict[str, np.ndarray], bool]:
    """The state of all ranks of ``group`` (a collective: every rank must call it), and whether
    the targets were class probabilities. The local state is left as it is.

    Returns the same bits on every rank: integer sums from an ``all_reduce``; floating sums
    added in rank order from zero, as ``Metrics.merge`` would add them in one process.
    """
    if not isinstance(metrics, Metrics):
        raise TypeError(f"metrics: expected lossdiag.Metrics, got {type(metrics).__name__}")
    torch, dist = _torch_dist()
    world = dist.get_world_size(group)
    state = metrics.state_dict()  # brings GPU sums to the host: the one synchronisation point
    int_keys, float_keys = _keys(state)
    ints = _pack(state, int_keys, np.int64)
    floats = _pack(state, float_keys, np.float64)
    seen = int(np.asarray(state["elements"])) > 0
    soft = (1 if int(state["soft_batches"]) else 0) if seen else _SOFT_UNKNOWN
    dev = _device(torch, dist, group)

    # 1. Configurations must agree, or the buffers below would not even line up (and a mismatch
    #    in a collective is a hang, not an error). Every rank sees every header, so every rank
    #    raises the same error.
    headers = _all_gather(torch, dist, group, _header(metrics, ints.size, floats.size, soft),
                          dev, world)
    h0 = headers[0]
    for r, h in enumerate(headers):
        diff = [name for name, a, b in zip(_HEADER[:-1], h0[:-1], h[:-1]) if a != b]
        if diff:
            raise ValueError(
                f"metrics: rank {r} of the group has a different Metrics configuration from rank "
                f"0 ({', '.join(diff)} differ); every rank must create Metrics with the same "
                "arguments")
    softs = {int(h[-1]) for h in headers} - {_SOFT_UNKNOWN}
    if len(softs) > 1:
        raise ValueError("metrics: some ranks saw class-probability targets and others class "
                         "labels; their losses are not on the same scale and cannot be merged")

    # 2. Integer sums: exact in any order, so one all_reduce (O(C^2) bytes, the bulk).
    t = torch.from_numpy(ints).to(dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    ints_sum = t.cpu().numpy()

    # 3. Floating sums: O(C + bins) per rank; gathered and added in rank order from zero.
    parts = _all_gather(torch, dist, group, floats, dev, world)
    acc = np.zeros_like(floats)
    for p in parts:
        acc = acc + p

    out: dict[str, np.ndarray] = {}
    _unpack(ints_sum, state, int_keys, out)
    _unpack(acc, state, float_keys, out)
    return {k: out[k] for k in state}, bool(softs and softs.pop() == 1)


def sync(metrics: Metrics, group: Any = None) -> Metrics:
    """Replace the local state of ``metrics`` by the state of all ranks of ``group`` (default:
    the world); a collective, so every rank of the group must call it. Returns ``metrics``.

    Afterwards every rank holds bitwise the same state, equal to a fresh ``Metrics`` merging the
    ranks' states in rank order; `compute` then gives the same numbers everywhere. A rank that
    saw no data contributes zeros. Calling ``update`` after ``sync`` adds to the global state,
    so a second ``sync`` would count the other ranks twice: keep a copy of the local state
    (``state_dict()``) first if you need to go on accumulating locally.
    """
    state, _soft = global_state(metrics, group)
    metrics.load_state_dict(state)  # the state carries the target kind (soft_batches)
    return metrics


__all__ = ["global_state", "sync"]
