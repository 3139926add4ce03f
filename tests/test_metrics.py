"""lossdiag.Metrics (streaming accumulator): compute() against scikit-learn and the float64
reference, update/merge/state_dict/reset semantics, mIoU conventions, bad input."""

from __future__ import annotations

import math

import lossdiag as ld
import numpy as np
import pytest
import reference as R
from conftest import make_case, to_backend

skm = pytest.importorskip("sklearn.metrics")

ERR = (ValueError, TypeError)
INT_KEYS = ("confusion", "count", "ignored", "nonfinite", "num_classes")


def batches(n=10, C=6, shape=(3, 6, 7, 8), seed=0, ignore_index=-100, absent=(), dtype=np.float64):
    """n random segmentation batches (logits, labels)."""
    out = []
    for i in range(n):
        x, y = make_case(shape, 1, seed=seed + i, scale=2.0, ignore_index=ignore_index,
                         frac_ignored=0.1)
        for c in absent:
            y = np.where(y == c, (c + 1) % C, y)
        out.append((x.astype(dtype), y))
    return out


def concat(bs):
    return np.concatenate([b[0] for b in bs]), np.concatenate([b[1] for b in bs])


def feed(m, bs, backend="cpu"):
    for x, y in bs:
        m.update(to_backend(x, backend), to_backend(y, backend))
    return m


def ref_compute(bs, absent="nan", **kw):
    st = R.ref_accumulate([R.ref_evaluate(x.astype(np.float64), y, **kw) for x, y in bs])
    return R.ref_metrics_compute(st, absent=absent)


def sk_metrics(bs, C, ignore_index=-100, absent="nan"):
    x, y = concat(bs)
    valid = y != ignore_index
    yt = y[valid]
    pred = np.argmax(x, axis=1)[valid]
    labels = np.arange(C)
    # lossdiag convention (Metrics.compute docstring): `absent` is the IoU/Dice of a class absent
    # from both target and prediction; precision/recall/F1 are NaN on 0/0 whatever `absent` is
    p, r, f1, _ = skm.precision_recall_fscore_support(yt, pred, labels=labels, average=None,
                                                      zero_division=np.nan)
    iou = skm.jaccard_score(yt, pred, labels=labels, average=None,
                            zero_division=1.0 if absent == "one" else 0.0)
    if absent == "nan":
        none = np.array([not (np.any(yt == c) or np.any(pred == c)) for c in labels])
        iou = np.where(none, np.nan, iou)
    return dict(precision=p, recall=r, f1=f1, iou=iou, confusion=skm.confusion_matrix(
        yt, pred, labels=labels), accuracy=skm.accuracy_score(yt, pred),
        balanced_accuracy=skm.balanced_accuracy_score(yt, pred) if yt.size else float("nan"),
        kappa=skm.cohen_kappa_score(yt, pred, labels=labels) if yt.size else float("nan"))


def close(a, b, rtol=1e-12, atol=0.0, what=""):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def assert_compute_equal(a, b, rtol=1e-12, what=""):
    """Two compute() dicts: integer entries exactly, floats within rtol (NaN == NaN)."""
    assert set(a) == set(b), set(a) ^ set(b)
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, dict):
            assert set(va) == set(vb), k
            for kk in va:
                close(va[kk], vb[kk], rtol, 1e-15, f"{what}{k}[{kk}]")
        elif k in INT_KEYS or k.endswith("_hist"):
            np.testing.assert_array_equal(np.asarray(va), np.asarray(vb), err_msg=f"{what}{k}")
        else:
            close(va, vb, rtol, 1e-15, f"{what}{k}")


# ------------------------------------------------------------------------------------------------
# compute() vs sklearn and the reference
# ------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("absent", ["nan", "zero", "one"])
def test_compute_vs_sklearn(backend, absent):
    C = 7
    bs = batches(C=C, shape=(3, C, 7, 8), absent=(4, 6))  # classes 4, 6 never a target
    for x, _ in bs:
        x[:, 5:] -= 30  # classes 5, 6 never predicted: 6 is absent, 5 has recall 0
    m = feed(ld.Metrics(C), bs, backend)
    got = m.compute(absent=absent)
    sk = sk_metrics(bs, C, absent=absent)
    np.testing.assert_array_equal(got["confusion"], sk["confusion"])
    for k in ("precision", "recall", "f1", "iou"):
        close(got[k], sk[k], 1e-12, 0, k)
    # per-class Dice == F1 where defined, the `absent` value where the class is absent
    dice = np.where(np.isnan(sk["f1"]), {"nan": np.nan, "zero": 0.0, "one": 1.0}[absent],
                    sk["f1"])
    close(got["dice"], dice, 1e-12, 0, "dice")
    for k in ("accuracy", "balanced_accuracy", "kappa"):
        close(got[k], sk[k], 1e-12, 0, k)
    close(got["mean_iou"], np.nanmean(sk["iou"]), 1e-12, 0, "mean_iou")
    close(got["mean_dice"], np.nanmean(dice), 1e-12, 0, "mean_dice")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_compute_vs_reference(backend, dtype):
    C, bins = 6, 20
    kw = dict(top_k=(1, 3), bins=bins, weight=np.linspace(0.5, 2.0, C), label_smoothing=0.05)
    bs = batches(C=C, dtype=dtype, seed=20)
    m = feed(ld.Metrics(C, **kw), bs, backend)
    got = m.compute()
    ref = ref_compute(bs, **kw)
    f32 = dtype == np.float32
    rt = 1e-5 if f32 else 1e-12
    for k in ("loss", "accuracy", "balanced_accuracy", "kappa", "mean_true_class_prob",
              "mean_entropy", "mean_iou", "mean_dice"):
        close(got[k], ref[k], rt, 0, k)
    for k in ("precision", "recall", "iou", "dice", "f1", "label_freq", "pred_freq"):
        close(got[k], ref[k], 1e-12, 0, k)
    close(got["per_class_loss"], ref["per_class_loss"], rt, 0, "per_class_loss")
    assert set(got["top_k_accuracy"]) == {1, 3}
    for k in (1, 3):
        close(got["top_k_accuracy"][k], ref["top_k_accuracy"][k], 1e-12, 0, f"top{k}")
    # histogram-derived values: exact for float64 data (no value within 1e-12 of a bin edge)
    h = 2e-3 if f32 else 1e-12
    for k in ("ece", "mce", "frac_true_prob_below_inv_e", "small_margin_correct_frac"):
        close(got[k], ref[k], h, h, k)
    if not f32:
        for k in ("true_prob_hist", "conf_hist", "margin_hist"):
            np.testing.assert_array_equal(got[k], ref_hist(bs, k, bins, kw))
    close(got["bin_edges"], np.linspace(0, 1, bins + 1), 1e-15, 1e-15, "bin_edges")
    close(got["margin_bin_edges"], np.linspace(-1, 1, bins + 1), 1e-15, 1e-15, "margin_edges")
    rel = got["reliability"]
    rr = ref["reliability"]
    close(rel["bin_edges"], rr["bin_edges"], 1e-15, 1e-15, "rel.bin_edges")
    if not f32:
        np.testing.assert_array_equal(rel["count"], rr["count"])
        nz = rr["count"] > 0
        close(np.asarray(rel["confidence"])[nz], rr["confidence"][nz], 1e-12, 0, "rel.conf")
        close(np.asarray(rel["accuracy"])[nz], rr["accuracy"][nz], 1e-12, 0, "rel.acc")
    assert got["count"] == sum(int((y != -100).sum()) for _, y in bs)
    assert got["ignored"] == sum(int((y == -100).sum()) for _, y in bs)
    assert got["nonfinite"] == 0 and got["num_classes"] == C


def ref_hist(bs, key, bins, kw):
    return sum(R.ref_evaluate(x.astype(np.float64), y, **dict(kw, bins=bins))[key] for x, y in bs)


def test_ece_mce_vs_direct_definition(backend):
    C, bins = 4, 10
    bs = batches(n=3, C=C, shape=(500, C), seed=30)
    got = feed(ld.Metrics(C, bins=bins), bs, backend).compute()
    x, y = concat(bs)
    v = y != -100
    P = R.softmax(x[v])
    conf = P.max(axis=1)
    correct = np.argmax(x[v], axis=1) == y[v]
    cal = R.ref_calibration(conf, correct, bins)
    close(got["ece"], cal["ece"], 1e-12, 0, "ece")
    close(got["mce"], cal["mce"], 1e-12, 0, "mce")


def test_small_margin_correct_frac_definition(backend):
    C, bins = 3, 20
    bs = batches(n=2, C=C, shape=(800, C), seed=31)
    got = feed(ld.Metrics(C, bins=bins), bs, backend).compute()
    x, y = concat(bs)
    v = y != -100
    P = R.softmax(x[v])
    lab = y[v]
    pt = P[np.arange(lab.size), lab]
    Po = P.copy()
    Po[np.arange(lab.size), lab] = -1
    m = pt - Po.max(axis=1)
    ref = np.sum((m >= 0) & (m < 2 / bins)) / np.sum(m >= 0)
    close(got["small_margin_correct_frac"], ref, 1e-12, 0, "small_margin_correct_frac")


@pytest.mark.parametrize("kind", ["channels_last", "soft", "float32_uint8"])
def test_compute_layouts_and_targets(backend, kind):
    C = 5
    r = np.random.default_rng(35)
    bs_ref, bs_in, kw = [], [], {}
    for i in range(3):
        x, y = make_case((2, C, 6, 7), 1, seed=35 + i, ignore_index=255, frac_ignored=0.1,
                         label_dtype=np.uint8)
        if kind == "channels_last":
            bs_in.append((np.ascontiguousarray(np.moveaxis(x, 1, -1)), y))
            bs_ref.append((x, y))
            kw = dict(axis=-1, ignore_index=255)
        elif kind == "soft":
            t = R.softmax(r.normal(size=(2, 6, 7, C)) * 2)
            t = np.ascontiguousarray(np.moveaxis(t, -1, 1))
            bs_in.append((x, t))
            bs_ref.append((x, t))
        else:
            bs_in.append((x.astype(np.float32), y))
            bs_ref.append((x.astype(np.float32).astype(np.float64), y))
            kw = dict(ignore_index=255)
    got = feed(ld.Metrics(C, **kw), bs_in, backend).compute()
    ref_kw = {k: v for k, v in kw.items() if k != "axis"}
    ref = ref_compute(bs_ref, **ref_kw)
    rt = 1e-5 if kind == "float32_uint8" else 1e-12
    for k in ("loss", "accuracy", "mean_entropy", "mean_true_class_prob"):
        close(got[k], ref[k], rt, 0, k)
    for k in ("iou", "precision", "recall", "label_freq"):
        close(got[k], ref[k], 1e-12, 0, k)
    np.testing.assert_array_equal(got["confusion"], ref["confusion"])


# ------------------------------------------------------------------------------------------------
# accumulation, merge, state_dict, reset
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("imagewise", [False, True])
def test_ten_updates_equal_one_concatenated(backend, imagewise):
    C = 6
    kw = dict(top_k=(1, 2), bins=20, imagewise=imagewise, ignore_index=255)
    bs = batches(C=C, seed=40, ignore_index=255)
    bs = [(x, y.astype(np.uint8)) for x, y in bs]  # 255 representable in uint8
    m10 = feed(ld.Metrics(C, **kw), bs, backend)
    m1 = feed(ld.Metrics(C, **kw), [concat(bs)], backend)
    for absent in ("nan", "zero", "one"):
        assert_compute_equal(m10.compute(absent=absent), m1.compute(absent=absent), 1e-12)
    # and it is the evaluate() of the concatenation
    x, y = concat(bs)
    st = ld.evaluate(to_backend(x, backend), to_backend(y, backend), top_k=(1, 2), bins=20,
                     ignore_index=255).get()
    got = m10.compute()
    np.testing.assert_array_equal(got["confusion"], st.confusion)
    assert got["count"] == st.count and got["ignored"] == st.ignored
    close(got["loss"], st.loss, 1e-12, 0, "loss")
    close(got["accuracy"], st.accuracy, 1e-12, 0, "accuracy")
    np.testing.assert_array_equal(got["conf_hist"], st.conf_hist)


def test_merge_equals_single(backend):
    C = 6
    kw = dict(top_k=(1, 3), imagewise=True, weight=np.linspace(1, 2, C))
    bs = batches(C=C, seed=50)
    a = feed(ld.Metrics(C, **kw), bs[:4], backend)
    b = feed(ld.Metrics(C, **kw), bs[4:], backend)
    a.merge(b)
    whole = feed(ld.Metrics(C, **kw), bs, backend)
    assert_compute_equal(a.compute(), whole.compute(), 1e-12)
    # b unchanged by the merge
    assert_compute_equal(b.compute(), feed(ld.Metrics(C, **kw), bs[4:], backend).compute(), 0)


def test_state_dict_round_trip(backend):
    C = 5
    kw = dict(top_k=(1, 2), bins=12, imagewise=True)
    bs = batches(n=4, C=C, shape=(2, 5, 6, 6), seed=60)
    m = feed(ld.Metrics(C, **kw), bs, backend)
    sd = m.state_dict()
    assert isinstance(sd, dict) and sd
    for k, v in sd.items():
        assert isinstance(v, np.ndarray), (k, type(v))
    m2 = ld.Metrics(C, **kw)
    m2.load_state_dict({k: v.copy() for k, v in sd.items()})
    assert_compute_equal(m.compute(), m2.compute(), 0)
    # continue accumulating after loading == accumulating everything
    more = batches(n=2, C=C, shape=(2, 5, 6, 6), seed=70)
    feed(m2, more, backend)
    assert_compute_equal(m2.compute(), feed(ld.Metrics(C, **kw), bs + more, backend).compute(),
                         1e-12)
    # the state dict is a snapshot: later updates do not change it
    sd_again = m.state_dict()
    for k in sd:
        np.testing.assert_array_equal(sd[k], sd_again[k])


def test_reset(backend):
    C = 4
    bs = batches(n=3, C=C, shape=(2, 4, 5, 5), seed=80)
    m = feed(ld.Metrics(C, top_k=(1, 2)), bs, backend)
    m.reset()
    fresh = ld.Metrics(C, top_k=(1, 2))
    got = m.compute()
    assert got["count"] == 0 and np.all(np.asarray(got["confusion"]) == 0)
    assert math.isnan(got["loss"]) and math.isnan(got["accuracy"])
    assert_compute_equal(got, fresh.compute(), 0)
    feed(m, bs[:1], backend)
    assert_compute_equal(m.compute(), feed(fresh, bs[:1], backend).compute(), 0)


def test_results_are_not_views_of_the_state():
    """update adds into the state in place: what compute, state_dict and update returned before
    must not change with later batches (binary and imagewise states included)."""
    C = 3
    bs = batches(n=2, C=C, shape=(2, 3, 4, 4), seed=90)
    for kw in ({}, {"imagewise": True}):
        m = ld.Metrics(C, **kw)
        s = m.update(*bs[0])
        got, st = m.compute(), m.state_dict()
        copies = [{k: np.array(v, copy=True) for k, v in d.items() if isinstance(v, np.ndarray)}
                  for d in (got, st)]
        batch = {k: np.array(getattr(s, k), copy=True) for k in ("confusion", "conf_hist")}
        m.update(*bs[1])
        for d, c in zip((got, st), copies):
            for k, v in c.items():
                np.testing.assert_array_equal(d[k], v, err_msg=k)
        for k, v in batch.items():
            np.testing.assert_array_equal(getattr(s, k), v, err_msg=k)
    xb = np.random.default_rng(0).normal(size=(4, 5))
    mb = ld.Metrics(2, binary=True)
    mb.update(xb, xb > 0)
    got = mb.compute()
    before = {k: np.array(got[k], copy=True) for k in ("prob_hist", "confusion", "conf_hist")}
    mb.update(xb, xb > 0)
    for k, v in before.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


# ------------------------------------------------------------------------------------------------
# mIoU conventions
# ------------------------------------------------------------------------------------------------
def test_absent_conventions_by_hand():
    # 3 classes; class 2 absent from target and prediction; class 1 predicted, never true
    x = np.array([[5.0, 0, -5], [5.0, 0, -5], [0, 5.0, -5], [5.0, 0, -5]])
    y = np.array([0, 0, 0, 1])
    m = ld.Metrics(3)
    m.update(x, y)
    # class 0: tp 2, fp 1 (row 3), fn 1 (row 2) -> iou 2/4; class 1: tp 0, fp 1, fn 1 -> 0
    r = m.compute(absent="nan")
    close(r["iou"], [0.5, 0.0, np.nan])
    close(r["mean_iou"], 0.25)
    close(r["precision"], [2 / 3, 0.0, np.nan])
    close(r["recall"], [2 / 3, 0.0, np.nan])
    r = m.compute(absent="zero")
    close(r["iou"], [0.5, 0.0, 0.0])
    close(r["mean_iou"], 0.5 / 3)
    r = m.compute(absent="one")
    close(r["iou"], [0.5, 0.0, 1.0])
    close(r["mean_iou"], 1.5 / 3)
    close(r["dice"], [2 * 2 / (3 + 3), 0.0, 1.0])


@pytest.mark.parametrize("absent", ["nan", "zero", "one"])
def test_imagewise_vs_reference(backend, absent):
    C = 5
    bs = batches(n=3, C=C, shape=(4, 5, 6, 6), seed=90, absent=(3,))
    for x, _ in bs:
        x[0, 2] -= 40  # image 0 of each batch never predicts class 2
    m = feed(ld.Metrics(C, imagewise=True), bs, backend)
    got = m.compute(absent=absent)
    inter, st, sp = [], [], []
    for x, y in bs:
        e = R.ref_evaluate(x, y, per_sample=True)
        inter.append(e["sample_intersection"])
        st.append(e["sample_true"])
        sp.append(e["sample_pred"])
    miou, mdice = R.ref_imagewise(np.concatenate(inter), np.concatenate(st),
                                  np.concatenate(sp), absent)
    close(got["mean_iou_imagewise"], miou, 1e-12, 0, "mean_iou_imagewise")
    close(got["mean_dice_imagewise"], mdice, 1e-12, 0, "mean_dice_imagewise")
    # dataset-wise differs from imagewise here
    assert abs(got["mean_iou"] - got["mean_iou_imagewise"]) > 1e-6
    assert "mean_iou_imagewise" not in ld.Metrics(C).compute()


# ------------------------------------------------------------------------------------------------
# adversarial inputs
# ------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_one_class_only(backend):
    C = 4
    x = np.random.default_rng(100).normal(size=(50, C))
    x[:, 2] += 100  # always predicts 2
    y = np.full(50, 2)
    m = feed(ld.Metrics(C), [(x, y)], backend)
    got = m.compute()
    sk = sk_metrics([(x, y)], C)
    assert got["accuracy"] == 1.0
    close(got["iou"], sk["iou"])
    close(got["precision"], sk["precision"])
    close(got["recall"], sk["recall"])
    close(got["balanced_accuracy"], sk["balanced_accuracy"])
    close(got["kappa"], sk["kappa"])  # sklearn: NaN (0/0) with a single class
    close(got["mean_iou"], 1.0)


def test_all_ignored(backend):
    C = 3
    x = np.random.default_rng(101).normal(size=(6, C, 4))
    y = np.full((6, 4), -100)
    got = feed(ld.Metrics(C), [(x, y)] * 2, backend).compute()
    assert got["count"] == 0 and got["ignored"] == 48
    for k in ("loss", "accuracy", "mean_iou", "ece", "mean_entropy"):
        assert math.isnan(got[k]), k
    assert np.all(np.isnan(got["iou"]))
    np.testing.assert_array_equal(got["confusion"], np.zeros((C, C)))


def test_nonfinite_batches(backend):
    C = 4
    bs = batches(n=3, C=C, shape=(30, C), seed=102)
    bs[1][0][5, 2] = np.nan
    bs[1][1][5] = 1
    bs[2][0][7, :] = np.inf
    bs[2][1][7] = 0
    got = feed(ld.Metrics(C), bs, backend).compute()
    assert got["nonfinite"] == 1 + C
    assert math.isnan(got["loss"])
    n = sum(int((y != -100).sum()) for _, y in bs)
    assert got["count"] == n and np.asarray(got["confusion"]).sum() == n - 2


# ------------------------------------------------------------------------------------------------
# binary
# ------------------------------------------------------------------------------------------------
def test_binary_metrics(backend):
    r = np.random.default_rng(110)
    bs = [(r.normal(size=(4, 1, 8, 8)) * 2, (r.random((4, 1, 8, 8)) < 0.3).astype(np.float32))
          for _ in range(5)]
    m = ld.Metrics(2, binary=True)
    for x, y in bs:
        m.update(to_backend(x, backend), to_backend(y, backend))
    got = m.compute()
    x = np.concatenate([b[0] for b in bs]).ravel()
    y = np.concatenate([b[1] for b in bs]).ravel().astype(np.float64)
    close(got["loss"], R.ref_binary_cross_entropy(x, y)[0], 1e-12, 0, "loss")
    close(got["accuracy"], R.ref_binary_accuracy(x, y), 1e-12, 0, "accuracy")
    yt, pred = (y >= 0.5).astype(int), (x > 0).astype(int)
    np.testing.assert_array_equal(got["confusion"], skm.confusion_matrix(yt, pred, labels=[0, 1]))
    close(got["iou"], skm.jaccard_score(yt, pred, average=None, labels=[0, 1]))
    close(got["kappa"], skm.cohen_kappa_score(yt, pred))


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_metrics_bad_input():
    with pytest.raises(ERR, match="num_classes"):
        ld.Metrics(0)
    with pytest.raises(ERR, match="bins"):
        ld.Metrics(3, bins=0)
    with pytest.raises(ERR, match="top_k"):
        ld.Metrics(3, top_k=(1, 4))
    with pytest.raises(ERR, match="top_k"):
        ld.Metrics(3, top_k=(0,))
    with pytest.raises(ERR, match="weight"):
        ld.Metrics(3, weight=np.ones(4))
    with pytest.raises(ERR, match="label_smoothing"):
        ld.Metrics(3, label_smoothing=1.5)
    try:  # at construction or at the first update: either way naming `axis`
        bad_axis = ld.Metrics(3, axis=2)
    except ERR as e:
        assert "axis" in str(e)
    else:
        with pytest.raises(ERR, match="axis"):
            bad_axis.update(np.zeros((2, 3, 4)), np.zeros((2, 4), np.int64))
    m = ld.Metrics(3)
    with pytest.raises(ERR, match="logits|num_classes"):
        m.update(np.zeros((2, 4)), np.zeros(2, np.int64))  # 4 classes into a 3-class Metrics
    with pytest.raises(ERR, match="target"):
        m.update(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ERR, match="absent"):
        m.compute(absent="ignore")
    with pytest.raises(ERR):
        m.merge(ld.Metrics(4))
    for other in (ld.Metrics(3, bins=10), ld.Metrics(3, top_k=(1, 2)),
                  ld.Metrics(3, imagewise=True)):
        with pytest.raises(ERR):  # a different configuration cannot be merged
            m.merge(other)
    with pytest.raises(ERR):
        m.load_state_dict({})
    with pytest.raises(ERR):  # a 4-class state into a 3-class Metrics
        m.load_state_dict(ld.Metrics(4).state_dict())
    # a failed update leaves the state untouched
    m.update(np.eye(3), np.arange(3))
    before = m.compute()
    with pytest.raises(ERR):
        m.update(np.eye(3), np.array([0, 1, 7]))
    assert_compute_equal(before, m.compute(), 0)
