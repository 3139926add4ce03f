"""`Metrics` of chunked Dask arrays: one task per chunk, the same bits as a sequential loop.

``lossdiag.dask.evaluate(logits, target, **options)`` evaluates Dask arrays that may be far
larger than memory (lazily generated, memory-mapped ``.npy`` files, zarr stores) and returns a
`lossdiag.Metrics`; ``Metrics.update`` accepts Dask arrays by delegating here.

How it runs:

* one task per chunk of the logits runs `Metrics.update` on that chunk (one pass over it, in
  the compiled kernels) and returns its state: integer counts and floating sums, O(C^2 + bins);
* the chunks are taken in C order of their block index over the non-class axes (what
  ``numpy.ndindex(numblocks)`` yields), and their states are combined in a fixed tree
  (``split_every`` children per node): integer counts are added in the tree (exact, so any order
  gives the same bits); the floating sums of the chunks travel up the tree in chunk order and
  are added at the end one chunk after the other, starting from zero;
* so the result is **bitwise** the state of ``m = Metrics(...)`` after
  ``m.update(chunk)`` for every chunk in that order, on any scheduler (threads, processes, a
  ``distributed`` cluster) and for any number of workers.

The class axis must be whole in every chunk (a pixel's logits are read together): a class axis
split across chunks is rechunked once, with a `dask.array.core.PerformanceWarning`, unless the
resulting chunks would exceed ``max_chunk_bytes``, which is refused with the rechunk to do
instead. With ``imagewise=True`` each chunk must also hold whole images (the spatial axes are
made whole the same way). Nothing is ever loaded whole: every task reads one chunk.

Dask (``dask[array]``, and ``distributed`` for clusters) is imported only when this module is
used: ``pip install "lossdiag[dask]"``.

Example:
    >>> import numpy as np, dask.array as da
    >>> import lossdiag, lossdiag.dask
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(8, 3, 16, 16)).astype(np.float32)
    >>> t = rng.integers(0, 3, size=(8, 16, 16))
    >>> xd, td = da.from_array(x, chunks=(2, 3, 8, 16)), da.from_array(t, chunks=(2, 8, 16))
    >>> m = lossdiag.dask.evaluate(xd, td, scheduler="threads")
    >>> m.compute()["count"]
    2048
    >>> seq = lossdiag.Metrics(3)                 # the same chunks, one after the other
    >>> for i in range(4):
    ...     for j in range(2):
    ...         _ = seq.update(x[2*i:2*i+2, :, 8*j:8*j+8], t[2*i:2*i+2, 8*j:8*j+8])
    >>> all(np.array_equal(a, b) for a, b in zip(m.state_dict().values(),
    ...                                          seq.state_dict().values()))
    True
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .core import validate as V
from .core.metrics import Metrics
from .distributed import _keys, _pack, _unpack

_DEFAULT_MAX_CHUNK = "1GiB"


def _dask() -> tuple[Any, Any]:
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - dask is in the test extra
        raise ImportError('lossdiag.dask needs Dask: pip install "lossdiag[dask]" '
                          '(dask[array], distributed)') from exc
    return dask, da


def _is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask.")


# ------------------------------------------------------------------------------------------------
# tasks (module-level functions: they are pickled by reference to worker processes)
# ------------------------------------------------------------------------------------------------
def _chunk_state(logits: Any, target: Any, cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The state of one chunk: (integer sums, a 1 x F row of floating sums)."""
    m = Metrics(**cfg)
    m.update(logits, target)
    st = m.state_dict()
    ik, fk = _keys(st)
    return _pack(st, ik, np.int64), _pack(st, fk, np.float64)[None, :]


def _combine(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Children in chunk order: integer sums added (exact), float rows kept in order."""
    ints = parts[0][0].copy()
    for p in parts[1:]:
        ints += p[0]
    return ints, np.concatenate([p[1] for p in parts], axis=0)


def _fold(init: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``init + rows[0] + rows[1] + ...`` left to right: what `Metrics.merge` does chunk by
    chunk (numpy's sum would add pairwise, which gives other bits)."""
    acc = np.array(init, np.float64, copy=True)
    for r in rows:
        acc = acc + r
    return acc


def _to_metrics(top: tuple[np.ndarray, np.ndarray], cfg: dict[str, Any], soft: bool) -> Metrics:
    m = Metrics(**cfg)
    st = m.state_dict()
    ik, fk = _keys(st)
    _add_into(m, st, ik, fk, top, soft)
    return m


def _add_into(m: Metrics, st: dict[str, np.ndarray], ik: list[str], fk: list[str],
              top: tuple[np.ndarray, np.ndarray], soft: bool) -> None:
    ints = _pack(st, ik, np.int64) + top[0]
    floats = _fold(_pack(st, fk, np.float64), top[1])
    out: dict[str, np.ndarray] = {}
    _unpack(ints, st, ik, out)
    _unpack(floats, st, fk, out)
    m.load_state_dict({k: out[k] for k in st})  # the state carries the target kind


# ------------------------------------------------------------------------------------------------
# planning: validation, chunk alignment, the task tree
# ------------------------------------------------------------------------------------------------
def _config(m: Metrics) -> dict[str, Any]:
    o, b = m.options, m.binary_options
    return dict(num_classes=m.num_classes, axis=o["axis"], weight=o["weight"],
                ignore_index=o["ignore_index"], label_smoothing=o["label_smoothing"],
                top_k=tuple(m.top_k), bins=m.bins, binary=m.binary, imagewise=m.imagewise,
                pos_weight=b["pos_weight"], threshold=b["threshold"], confusion=m.confusion)


def _as_dask(da: Any, x: Any, name: str, chunks: tuple[tuple[int, ...], ...] | None) -> Any:
    if _is_dask(x):
        return x
    if x is None or not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected a Dask array (or an array with .shape and .dtype), "
                        f"got {type(x).__name__}")
    return da.from_array(x, chunks=chunks if chunks is not None else "auto")


def _known_chunks(x: Any, name: str) -> None:
    if _is_dask(x) and any(math.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError(f"{name}: unknown chunk sizes (a boolean-mask selection?); call "
                         f"{name}.compute_chunk_sizes() first")


def _nbytes(chunks: tuple[tuple[int, ...], ...], itemsize: int) -> int:
    return int(np.prod([max(c) if c else 0 for c in chunks], dtype=np.float64)) * itemsize


def _fmt(n: float) -> str:
    from dask.utils import format_bytes

    return format_bytes(int(n))


def _whole_axes(x: Any, axes: list[int], max_bytes: int, why: str) -> Any:
    """Rechunk `x` so that `axes` are whole in every chunk: once, with a warning; refused if a
    chunk would exceed `max_bytes`."""
    split = [a for a in axes if len(x.chunks[a]) > 1]
    if not split:
        return x
    new = tuple((x.shape[a],) if a in axes else c for a, c in enumerate(x.chunks))
    size = _nbytes(new, x.dtype.itemsize)
    example = {a: -1 for a in axes}
    example.update({a: max(1, c[0] // 2) for a, c in enumerate(x.chunks) if a not in axes})
    if size > max_bytes:
        raise ValueError(
            f"logits: axes {split} are split across chunks ({why}); making them whole would give "
            f"chunks of {_fmt(size)}, more than max_chunk_bytes={_fmt(max_bytes)}. Rechunk with "
            f"smaller chunks along the other axes first, e.g. logits.rechunk({example})")
    from dask.array.core import PerformanceWarning

    warnings.warn(
        f"logits: axes {split} are split across chunks ({why}); rechunking once to chunks of "
        f"{_fmt(size)}. Chunk the source with those axes whole to avoid the extra copy.",
        PerformanceWarning, stacklevel=4)
    return x.rechunk(new)


def _prepare(m: Metrics, logits: Any, target: Any, max_chunk_bytes: Any,
             ) -> tuple[list[tuple[Any, Any]], bool]:
    """Validate, align the chunks, and list the (logits block, target block) pairs in chunk
    order; also whether the targets are class probabilities."""
    _, da = _dask()
    from dask.utils import parse_bytes

    max_bytes = parse_bytes(max_chunk_bytes) if isinstance(max_chunk_bytes, str) else int(
        max_chunk_bytes)
    if max_bytes <= 0:
        raise ValueError(f"max_chunk_bytes: must be positive, got {max_chunk_bytes!r}")
    if not _is_dask(logits) and not _is_dask(target):
        raise TypeError("logits, target: neither is a Dask array; use Metrics.update or "
                        "lossdiag.evaluate for in-memory arrays")
    _known_chunks(logits, "logits")
    _known_chunks(target, "target")
    if not _is_dask(logits):  # in-memory logits with a Dask target: follow the target's chunks
        tch = target.chunks
        if not m.binary and len(tch) < len(getattr(logits, "shape", ())):
            ax = V.resolve_layout(tuple(logits.shape), m.options["axis"]).axis
            tch = tch[:ax] + ((int(logits.shape[ax]),),) + tch[ax:]
        logits = _as_dask(da, logits, "logits", tch if len(tch) == len(
            getattr(logits, "shape", ())) else None)
    logits = _as_dask(da, logits, "logits", None)
    V.check_dtype_logits(logits)
    shape = tuple(int(s) for s in logits.shape)
    tshape = tuple(int(s) for s in getattr(target, "shape", ()))
    soft = False
    if m.binary:
        if tshape != shape:
            raise ValueError(f"target: expected shape {shape} (the logits' shape), got {tshape}")
        cax = None
        axes_whole: list[int] = []
    else:
        lay = V.resolve_layout(shape, m.options["axis"])
        cax = lay.axis
        if lay.C != m.num_classes:
            raise ValueError(f"logits: {lay.C} classes, but Metrics was created with "
                             f"num_classes={m.num_classes}")
        tdt = np.dtype(getattr(target, "dtype", np.int64))
        soft = tdt.kind == "f" and len(tshape) == len(shape)
        if soft and tshape != shape:
            raise ValueError(f"target: class probabilities must have the logits' shape {shape}, "
                             f"got {tshape}")
        if not soft and tshape != lay.target_shape:
            raise ValueError(f"target: expected shape {lay.target_shape} for logits of shape "
                             f"{shape}, got {tshape}")
        axes_whole = [cax]
        if m.imagewise:
            axes_whole += [a for a in range(1, len(shape)) if a != cax]
    why = "the class axis" if not m.imagewise else "imagewise needs whole images"
    if cax is not None:
        logits = _whole_axes(logits, axes_whole, max_bytes, why)
    # The target follows the logits' chunks (1/C of the bytes; a lazy, chunkwise rechunk).
    if m.binary or soft:
        tchunks = logits.chunks
    else:
        tchunks = tuple(c for a, c in enumerate(logits.chunks) if a != cax)
    target = _as_dask(da, target, "target", tchunks)
    if target.chunks != tchunks:
        target = target.rechunk(tchunks)

    lblocks = logits.to_delayed()
    tblocks = target.to_delayed()
    grid = tuple(n for a, n in enumerate(lblocks.shape) if a != cax)
    pairs = []
    for idx in np.ndindex(*grid):
        li = idx if cax is None else idx[:cax] + (0,) + idx[cax:]
        ti = li if (m.binary or soft) else idx
        pairs.append((lblocks[li], tblocks[ti]))
    return pairs, soft


def _tree(m: Metrics, pairs: list[tuple[Any, Any]], split_every: int) -> Any:
    dask, _ = _dask()
    cfg = dask.delayed(_config(m), pure=True, traverse=False)
    level = [dask.delayed(_chunk_state, pure=True)(lb, tb, cfg) for lb, tb in pairs]
    if not level:  # a zero-size array: no chunks, no statistics
        n_int, n_float = _sizes(m)
        return dask.delayed((np.zeros(n_int, np.int64), np.zeros((0, n_float))), pure=True,
                            traverse=False)
    while len(level) > 1:
        level = [dask.delayed(_combine, pure=True)(*level[i:i + split_every])
                 for i in range(0, len(level), split_every)]
    return level[0]


def _sizes(m: Metrics) -> tuple[int, int]:
    st = Metrics(**_config(m)).state_dict()
    ik, fk = _keys(st)
    return _pack(st, ik, np.int64).size, _pack(st, fk, np.float64).size


def _check_split(split_every: Any) -> int:
    if not isinstance(split_every, (int, np.integer)) or isinstance(split_every, bool):
        raise TypeError(f"split_every: expected an int, got {split_every!r}")
    if split_every < 2:
        raise ValueError(f"split_every: must be >= 2, got {split_every}")
    return int(split_every)


# ------------------------------------------------------------------------------------------------
# public
# ------------------------------------------------------------------------------------------------
def evaluate(logits: Any, target: Any, *, num_classes: int | None = None, axis: int = 1,
             weight: Any = None, ignore_index: int = -100, label_smoothing: float = 0.0,
             top_k: Any = (1,), bins: int = 20, binary: bool = False, imagewise: bool = False,
             pos_weight: Any = None, threshold: float = 0.0, split_every: int = 8,
             max_chunk_bytes: int | str = _DEFAULT_MAX_CHUNK, scheduler: Any = None,
             compute: bool = True) -> Any:
    """`Metrics` of Dask arrays, one task per chunk, bitwise the sequential merge of the chunks.

    Args:
        logits, target: as `lossdiag.Metrics.update` (class labels, class probabilities, or
            binary targets), as Dask arrays (a NumPy or memory-mapped target is wrapped with the
            logits' chunks). Chunks may split the batch and spatial axes freely.
        num_classes: C; default: the length of the class axis (2 with ``binary=True``).
        axis, weight, ignore_index, label_smoothing, top_k, bins, binary, imagewise,
            pos_weight, threshold: as `lossdiag.Metrics`.
        split_every: children per node of the reduction tree (>= 2).
        max_chunk_bytes: the largest logits chunk an automatic rechunk of the class axis (or,
            with ``imagewise``, of the spatial axes) may create; beyond it a ValueError says
            how to rechunk instead. An int or a string such as "512MiB".
        scheduler: passed to ``dask.compute`` ("threads", "processes", "sync", a
            ``distributed.Client``); default: Dask's current default (an active Client).
        compute: False returns a ``dask.delayed`` object whose result is the `Metrics`.

    Returns:
        A `Metrics` (call ``.compute()`` for the numbers), whose state is bitwise that of
        ``Metrics(...)`` updated chunk by chunk in C order of the block index (see the module
        docstring), whatever the scheduler.
    """
    _known_chunks(logits, "logits")
    if num_classes is None:
        if binary:
            num_classes = 2
        else:
            shape = tuple(getattr(logits, "shape", ()))
            num_classes = int(shape[V.resolve_layout(shape, axis).axis])
    m = Metrics(num_classes, axis=axis, weight=weight, ignore_index=ignore_index,
                label_smoothing=label_smoothing, top_k=top_k, bins=bins, binary=binary,
                imagewise=imagewise, pos_weight=pos_weight, threshold=threshold)
    split_every = _check_split(split_every)
    pairs, soft = _prepare(m, logits, target, max_chunk_bytes)
    dask, _ = _dask()
    out = dask.delayed(_to_metrics, pure=True)(_tree(m, pairs, split_every),
                                               dask.delayed(_config(m), traverse=False), soft)
    if not compute:
        return out
    return out.compute(scheduler=scheduler)


def update(metrics: Metrics, logits: Any, target: Any, *, split_every: int = 8,
           max_chunk_bytes: int | str = _DEFAULT_MAX_CHUNK, scheduler: Any = None) -> Metrics:
    """Add Dask arrays into ``metrics`` (what ``Metrics.update`` does for Dask inputs).

    The chunks' sums are added after the current state, chunk by chunk in order, so the state
    is bitwise that of calling ``metrics.update`` on every chunk in turn. Returns a new
    `Metrics` holding the statistics of these arrays alone.
    """
    if not isinstance(metrics, Metrics):
        raise TypeError(f"metrics: expected lossdiag.Metrics, got {type(metrics).__name__}")
    split_every = _check_split(split_every)
    pairs, soft = _prepare(metrics, logits, target, max_chunk_bytes)
    top = _tree(metrics, pairs, split_every).compute(scheduler=scheduler)
    alone = _to_metrics(top, _config(metrics), soft)
    st = metrics.state_dict()
    ik, fk = _keys(st)
    _add_into(metrics, st, ik, fk, top, soft)
    return alone


__all__ = ["evaluate", "update"]
