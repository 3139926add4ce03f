"""Tests of lossdiag.landscape: exact logistic surfaces, directions, grids, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lossdiag import landscape as L
from lossdiag.landscape import (
    Directions,
    Landscape,
    filter_normalize,
    interpolate,
    logistic_surface,
    pca_directions,
    random_directions,
    random_line,
    random_plane,
    trajectory,
)
from lossdiag.landscape import surfaces as L_surfaces


def _data(n: int = 3000, seed: int = 0, soft: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2)) * [1.0, 2.5] + [0.3, -0.2]
    y = (X @ [1.5, -0.7] + 0.8 * rng.standard_normal(n) > 0).astype(np.float64)
    if soft:
        y = np.clip(y * 0.9 + 0.05 * rng.random(n), 0.0, 1.0)
    return X, y


def brute_force_surface(X: np.ndarray, y: np.ndarray, w1: np.ndarray, w2: np.ndarray,
                        bias: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid point by grid point, float64, the textbook BCE in its stable form."""
    loss = np.empty((len(w2), len(w1)))
    acc = np.empty((len(w2), len(w1)))
    for j, b2 in enumerate(w2):
        for i, b1 in enumerate(w1):
            z = b1 * X[:, 0] + b2 * X[:, 1] + bias
            # -[y log s(z) + (1-y) log(1 - s(z))] = log(1 + e^z) - y z
            loss[j, i] = np.mean(np.logaddexp(0.0, z) - y * z)
            acc[j, i] = np.mean((z > 0) == (y >= 0.5))
    return loss, acc


# --------------------------------------------------------------------------- logistic surface


@pytest.mark.parametrize("soft,bias", [(False, 0.0), (True, -0.7)])
def test_logistic_surface_equals_brute_force_at_every_point(soft: bool, bias: float) -> None:
    X, y = _data(soft=soft)
    w1 = np.linspace(-6.0, 5.0, 23)          # non-square and asymmetric: catches transposes
    w2 = np.linspace(-3.0, 4.0, 17)
    land = logistic_surface(X, y, w1, w2, bias=bias)
    ref_loss, ref_acc = brute_force_surface(X, y, w1, w2, bias)
    assert land.loss.shape == (17, 23) and land.accuracy.shape == (17, 23)
    np.testing.assert_allclose(land.loss, ref_loss, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(land.accuracy, ref_acc)
    assert np.array_equal(land.x, w1) and np.array_equal(land.y, w2)
    assert land.kind == "logistic" and land.meta["samples"] == len(y)


def test_logistic_surface_large_logits_and_textbook_values() -> None:
    # the seed's practice problems: y = 1, p = 0.9 -> 0.105; p = 0.1 -> 2.303
    X = np.array([[1.0, 0.0]])
    z = np.log(0.9 / 0.1)
    land = logistic_surface(X, [1.0], [z, -z], [0.0])
    np.testing.assert_allclose(land.loss[0], [-np.log(0.9), -np.log(0.1)], rtol=1e-12)
    # very confident mistakes: loss ~ |z| (no overflow to inf)
    land = logistic_surface(X, [0.0], [800.0], [0.0])
    np.testing.assert_allclose(land.loss, [[800.0]], rtol=1e-12)


def test_logistic_surface_is_one_batched_core_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from lossdiag import _core

    L_surfaces._logistic_throughput()  # calibrate first (it calls the core too)
    calls: list[tuple[int, int]] = []
    real = _core.surface

    def spy(X, y, n, w1, n1, w2, n2, *rest):  # type: ignore[no-untyped-def]
        calls.append((n1, n2))
        return real(X, y, n, w1, n1, w2, n2, *rest)

    monkeypatch.setattr(_core, "surface", spy)
    X, y = _data(500)
    logistic_surface(X, y, np.linspace(-2, 2, 31), np.linspace(-2, 2, 29), progress=False)
    assert calls == [(31, 29)]


def test_blocked_grid_is_bit_identical_and_resumable(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _data(2000)
    w1, w2 = np.linspace(-3, 3, 15), np.linspace(-2, 2, 12)
    whole = logistic_surface(X, y, w1, w2)
    # force small row blocks, interrupt after the 2nd block, then resume
    monkeypatch.setattr(L_surfaces, "_logistic_throughput",
                        lambda: 15 * 2000 / 0.25 * 3)  # 3 rows
    from lossdiag import _core

    real = _core.surface
    n_calls = {"n": 0}

    def flaky(*args):  # type: ignore[no-untyped-def]
        n_calls["n"] += 1
        if n_calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    ck = tmp_path / "grid.npz"
    monkeypatch.setattr(_core, "surface", flaky)
    with pytest.raises(KeyboardInterrupt):
        logistic_surface(X, y, w1, w2, progress=False, checkpoint=ck)
    assert ck.exists()
    with np.load(ck) as z:
        assert int(z["done"].sum()) == 2 * 3 * 15
    monkeypatch.setattr(_core, "surface", real)
    resumed = logistic_surface(X, y, w1, w2, progress=False, checkpoint=ck)
    assert np.array_equal(resumed.loss, whole.loss)
    assert np.array_equal(resumed.accuracy, whole.accuracy)
    # a checkpoint of another grid is refused, naming the argument
    with pytest.raises(ValueError, match="checkpoint"):
        logistic_surface(X, y, w1, w2, bias=0.5, checkpoint=ck)


def test_cost_estimate_and_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    X, y = _data(1000)
    c = L.estimate_logistic_cost(X, np.zeros(51), np.zeros(51))
    assert (c.points, c.samples, c.evaluations) == (2601, 1000, 2601000)
    assert c.seconds is not None and c.seconds > 0
    assert "2601 grid points x 1000 samples" in str(c)
    land = logistic_surface(X, y, np.linspace(-1, 1, 51), np.linspace(-1, 1, 51),
                            progress=True)
    err = capsys.readouterr().err
    assert "2601 grid points x 1000 samples" in err
    assert land.cost is not None and land.cost.points == 2601


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(X=np.zeros((5, 3))), ValueError, "X"),
    (dict(X=np.full((5, 2), np.nan)), ValueError, "X"),
    (dict(y=np.full(5, 2.0)), ValueError, "y"),
    (dict(y=np.zeros(4)), ValueError, "y"),
    (dict(w1=np.zeros((2, 2))), ValueError, "w1"),
    (dict(w2=[]), ValueError, "w2"),
    (dict(w2=[np.inf]), ValueError, "w2"),
    (dict(bias=np.nan), ValueError, "bias"),
    (dict(bias="0"), TypeError, "bias"),
    (dict(progress="yes"), TypeError, "progress"),
])
def test_logistic_surface_bad_input(kwargs: dict, exc: type, word: str) -> None:
    args = dict(X=np.zeros((5, 2)), y=np.zeros(5), w1=[0.0, 1.0], w2=[0.0])
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("bias", "progress") if k in args}
    with pytest.raises(exc, match=word):
        logistic_surface(args["X"], args["y"], args["w1"], args["w2"], **extra)


# --------------------------------------------------------------------------- directions


def _filter_norms(a: np.ndarray, axis: int) -> np.ndarray:
    ax = axis % a.ndim
    return np.sqrt(np.sum(a.astype(np.float64) ** 2, axis=tuple(i for i in range(a.ndim)
                                                                    if i != ax)))


def test_filter_normalisation_matches_each_filter_norm() -> None:
    rng = np.random.default_rng(5)
    conv = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * np.arange(1, 9)[:, None,
                                                                                  None, None]
    lin = rng.standard_normal((10, 5)) * 3.0
    bias = rng.standard_normal(10)
    params = [conv, lin, bias]
    d = random_directions(params, n=2, seed=11)
    for vec in d.vectors:
        np.testing.assert_allclose(_filter_norms(vec[0], 0), _filter_norms(conv, 0), rtol=1e-12)
        np.testing.assert_allclose(_filter_norms(vec[1], 0), _filter_norms(lin, 0), rtol=1e-12)
        assert not np.any(vec[2])                       # bias="zero" (Li et al.'s default)
        assert vec[0].dtype == np.float64 and vec[0].shape == conv.shape
    # the two directions are different draws, and the norms are not trivially equal per entry
    assert not np.allclose(d[0][0], d[1][0])
    # NumPy/Keras layout: filters (neurons) along the last axis
    dl = random_directions([lin.T.copy()], n=1, seed=2, filter_axis=-1)
    np.testing.assert_allclose(_filter_norms(dl[0][0], -1), _filter_norms(lin.T, -1),
                               rtol=1e-12)
    # including 1-D parameters: scaled to the parameter's norm
    di = random_directions(params, n=1, seed=3, bias="include")
    np.testing.assert_allclose(np.linalg.norm(di[0][2]), np.linalg.norm(bias), rtol=1e-12)
    # layer normalisation: the whole array gets the array's norm
    dz = random_directions(params, n=1, seed=3, normalization="layer")
    np.testing.assert_allclose(np.linalg.norm(dz[0][1]), np.linalg.norm(lin), rtol=1e-12)
    assert not np.allclose(_filter_norms(dz[0][1], 0), _filter_norms(lin, 0))


def test_filter_normalize_zero_filters() -> None:
    p = np.array([[0.0, 0.0], [3.0, 4.0]])
    out = filter_normalize(np.array([[1.0, 1.0], [0.0, 0.0]]), p)
    assert np.array_equal(out, np.zeros((2, 2)))   # zero param filter / zero direction filter
    with pytest.raises(ValueError, match="direction"):
        filter_normalize(np.ones(3), np.ones(2))


def test_directions_are_seeded() -> None:
    params = [np.ones((4, 3)), np.ones(4)]
    a = random_directions(params, seed=7)
    b = random_directions(params, seed=7)
    c = random_directions(params, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))
    assert not np.array_equal(a[0][0], c[0][0])
    assert a.digest == b.digest != c.digest


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(normalization="batch"), ValueError, "normalization"),
    (dict(bias="keep"), ValueError, "bias"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(filter_axis=3), ValueError, "filter_axis"),
    (dict(n=0), ValueError, "n"),
])
def test_random_directions_bad_input(kwargs: dict, exc: type, word: str) -> None:
    with pytest.raises(exc, match=word):
        random_directions([np.ones((2, 2))], **kwargs)


def test_params_must_be_a_list_of_arrays() -> None:
    with pytest.raises(TypeError, match="params"):
        random_directions(np.ones((2, 2)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"params\[0\]"):
        random_plane(lambda p: 0.0, [np.array([np.nan, 1.0])])
    with pytest.raises(TypeError, match="loss_fn"):
        random_plane(None, [np.ones(2)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss_fn"):
        random_plane(lambda p: "x", [np.ones((2, 2))], steps=3)


# --------------------------------------------------------------------------- planes and lines


class TinyMLP:
    """A 2-layer tanh network in the NumPy layout (in, out), softmax cross-entropy."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((200, 4)).astype(np.float32)
        self.y = (self.x[:, 0] + self.x[:, 1] > 0).astype(np.int64)
        self.params = [(rng.standard_normal((4, 8)) * 0.5).astype(np.float32),
                       np.zeros(8, np.float32),
                       (rng.standard_normal((8, 2)) * 0.5).astype(np.float32),
                       np.zeros(2, np.float32)]

    def loss(self, p: list[np.ndarray]) -> float:
        import lossdiag

        assert all(a.dtype == np.float32 for a in p)   # parameters keep their dtype
        h = np.tanh(self.x @ p[0] + p[1])
        return lossdiag.cross_entropy(h @ p[2] + p[3], self.y)


def test_random_plane_reload_reproduces_grid_bit_for_bit(tmp_path: Path) -> None:
    m = TinyMLP()
    land = random_plane(m.loss, m.params, steps=(9, 7), span=0.8, seed=4, filter_axis=-1)
    assert land.loss.shape == (7, 9)
    assert land.directions is not None and land.directions.seed == 4
    assert land.directions.normalization == "filter" and land.directions.filter_axis == -1
    # the centre of the grid is the model itself
    assert land.loss[3, 4] == m.loss(m.params)
    path = tmp_path / "dirs.npz"
    land.directions.save(path)
    loaded = Directions.load(path)
    assert (loaded.seed, loaded.normalization, loaded.bias, loaded.filter_axis) == \
        (4, "filter", "zero", -1)
    again = random_plane(m.loss, m.params, steps=(9, 7), span=0.8, directions=loaded)
    assert np.array_equal(again.loss, land.loss)
    # ... and the seed alone reproduces it too; another seed does not
    assert np.array_equal(random_plane(m.loss, m.params, steps=(9, 7), span=0.8, seed=4,
                                       filter_axis=-1).loss, land.loss)
    other = random_plane(m.loss, m.params, steps=(9, 7), span=0.8, seed=5, filter_axis=-1)
    assert not np.array_equal(other.loss, land.loss)
    # the whole landscape round-trips as well
    land.save(tmp_path / "land.npz")
    back = Landscape.load(tmp_path / "land.npz")
    assert np.array_equal(back.loss, land.loss) and back.directions is not None
    assert np.array_equal(back.directions[1][0], land.directions[1][0])
    # directions of other shapes are refused
    with pytest.raises(ValueError, match="params"):
        random_plane(m.loss, m.params[:2], directions=loaded)


def test_random_plane_resumes_after_interrupt(tmp_path: Path) -> None:
    m = TinyMLP(1)
    full = random_plane(m.loss, m.params, steps=(6, 5), seed=0, filter_axis=-1)
    calls = {"n": 0}

    def interrupted(p: list[np.ndarray]) -> float:
        calls["n"] += 1
        if calls["n"] == 12:        # the 1st call times the centre; 10 grid points done
            raise KeyboardInterrupt
        return m.loss(p)

    ck = tmp_path / "plane.npz"
    with pytest.raises(KeyboardInterrupt):
        random_plane(interrupted, m.params, steps=(6, 5), seed=0, filter_axis=-1,
                     checkpoint=ck)
    calls["n"] = -10**9
    counted = {"n": 0}

    def counting(p: list[np.ndarray]) -> float:
        counted["n"] += 1
        return m.loss(p)

    res = random_plane(counting, m.params, steps=(6, 5), seed=0, filter_axis=-1,
                       checkpoint=ck)
    assert counted["n"] == 1 + 30 - 10
    assert np.array_equal(res.loss, full.loss)


def test_random_line_and_interpolation() -> None:
    m = TinyMLP(2)
    line = random_line(m.loss, m.params, steps=11, span=1.0, seed=1, filter_axis=-1)
    assert line.loss.shape == (11,) and line.loss[5] == m.loss(m.params)
    assert len(line.directions) == 1
    b = [p + 0.3 for p in m.params]
    it = interpolate(m.params, b, m.loss, steps=5, alpha_range=(-0.5, 1.5))
    np.testing.assert_allclose(it.x, [-0.5, 0.0, 0.5, 1.0, 1.5])
    assert it.loss[1] == m.loss(m.params)
    assert np.isclose(it.loss[3], m.loss(b), rtol=1e-6)
    with pytest.raises(ValueError, match="params_b"):
        interpolate(m.params, b[:1] + [np.zeros(3)] + b[2:], m.loss)
    with pytest.raises(ValueError, match="steps"):
        interpolate(m.params, b, m.loss, steps=1)


# --------------------------------------------------------------------------- trajectories


def test_trajectory_in_a_plane_is_recovered_exactly() -> None:
    rng = np.random.default_rng(0)
    end = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    u = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    v = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    ts = np.linspace(1, 0, 12)
    path = [[e + 2 * t * a + np.sin(3 * t) * b for e, a, b in zip(end, u, v)] for t in ts]

    def f(p: list[np.ndarray]) -> float:
        return float(sum(np.sum(np.cos(a)) for a in p))

    land = trajectory(path, f, steps=(11, 9))
    assert land.loss.shape == (9, 11) and land.path.shape == (12, 2)
    np.testing.assert_allclose(land.explained_variance.sum(), 1.0, rtol=1e-10)
    assert land.explained_variance[0] >= land.explained_variance[1] >= 0
    np.testing.assert_allclose(land.path[-1], 0.0, atol=1e-12)
    assert np.all(land.path[0] <= 0)
    np.testing.assert_allclose(land.path_loss, [f(c) for c in path])
    # the path lies in the plane: end + c1 d1 + c2 d2 rebuilds every checkpoint
    d = land.directions
    for c, (c1, c2) in zip(path, land.path):
        for i in range(2):
            np.testing.assert_allclose(end[i] + c1 * d[0][i] + c2 * d[1][i], c[i], atol=1e-10)
    # the grid covers the path
    assert land.x[0] < land.path[:, 0].min() and land.x[-1] > land.path[:, 0].max()
    assert land.y[0] < land.path[:, 1].min() and land.y[-1] > land.path[:, 1].max()


def test_trajectory_explained_variance_below_one_off_plane() -> None:
    rng = np.random.default_rng(1)
    path = [[rng.standard_normal(6)] for _ in range(8)]
    _, xy, evr = pca_directions(path)
    assert 0 < evr.sum() < 1 and xy.shape == (8, 2)
    with pytest.raises(ValueError, match="checkpoints"):
        pca_directions(path[:2])
    with pytest.raises(ValueError, match="checkpoints"):
        pca_directions([[np.ones(3)]] * 4)


# --------------------------------------------------------------------------- plots


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    X, y = _data(500)
    land = logistic_surface(X, y, np.linspace(-4, 4, 25), np.linspace(-4, 4, 21))
    land = land.with_path(np.array([[-3.0, 3.0], [-1.0, 1.0], [1.5, -0.5]]))
    for kind in ("contourf", "contour", "surface"):
        out = land.savefig(tmp_path / f"{kind}.png", kind)
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    m = TinyMLP()
    line = random_line(m.loss, m.params, steps=9, filter_axis=-1)
    assert line.savefig(tmp_path / "line.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="kind"):
        line.plot("contourf")
    with pytest.raises(ValueError, match="kind"):
        land.plot("heatmap")
    with pytest.raises(ValueError, match="path"):
        land.with_path(np.zeros(3))
