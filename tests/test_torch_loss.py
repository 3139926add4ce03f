"""lossdiag.torch (the fused losses as PyTorch losses) and torch tensors in the plain API.

torch is the arbiter: every option is compared with torch.nn.functional (values and gradients),
float64 with gradcheck; layouts, dtypes, inplace_backward, torch.compile without a graph break,
a short training run that must follow torch's trajectory. GPU cases run only with CUDA + CuPy.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import lossdiag as ld  # noqa: E402
import lossdiag.torch as ldt  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

REDUCTIONS = ["mean", "sum", "none"]
# loss rtol, gradient atol relative to max |grad| (float16/bfloat16 are computed in float32 and
# rounded once at the end, torch's reference runs in float64 on the same rounded values)
TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-6),
       torch.float16: (1e-3, 1e-3), torch.bfloat16: (8e-3, 8e-3)}
DTYPES = list(TOL)


@pytest.fixture(autouse=True)
def _recycle_small_buffers():
    """Every test here also exercises the CPU gradient-buffer recycling (normally >= 1 MB)."""
    before = ldt._grad_buffers.min_bytes
    ldt._grad_buffers.min_bytes = 0
    yield
    ldt._grad_buffers.min_bytes = before
    ldt.empty_cache()


def _seed(n=0):
    return torch.Generator().manual_seed(n)


def _labels(shape_wo_c, C, g, ignore=None):
    y = torch.randint(0, C, shape_wo_c, generator=g)
    if ignore is not None:
        y[torch.rand(shape_wo_c, generator=g) < 0.2] = ignore
    return y


def _run(fn, x, *args, grad_out=True, **kw):
    """(loss, grad) of fn(x, ...) with a random per-element upstream gradient for "none"."""
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, *args, **kw)
    go = torch.rand(loss.shape, generator=_seed(7), dtype=torch.float64).to(loss.dtype) + 0.5
    (loss * go).sum().backward() if grad_out else loss.sum().backward()
    return loss.detach(), x.grad


def _close(a, b, dtype, scale=None, what=""):
    rtol, gatol = TOL[dtype]
    a, b = a.double(), b.double()
    if scale is None:  # loss
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * 1e-3, equal_nan=True, msg=what)
    else:
        torch.testing.assert_close(a, b, rtol=gatol, atol=gatol * scale, equal_nan=True, msg=what)


def _compare_ce(x, y, dtype, **kw):
    """lossdiag.torch vs F.cross_entropy in float64 on the values x holds in `dtype`."""
    xd = x.to(dtype)
    if y.is_floating_point():
        y = y.to(dtype)
    l1, g1 = _run(ldt.cross_entropy, xd, y, **kw)
    yr = y.double() if y.is_floating_point() else y
    wr = kw.pop("weight", None)
    l2, g2 = _run(F.cross_entropy, xd.double(), yr, weight=None if wr is None else wr.double(),
                  **kw)
    assert l1.dtype == dtype and g1.dtype == dtype and g1.shape == x.shape
    _close(l1, l2, dtype, what="loss")
    _close(g1, g2, dtype, scale=float(g2.abs().max()) or 1.0, what="grad")
    return g1


# ------------------------------------------------------------------------------------------------
# import hygiene
# ------------------------------------------------------------------------------------------------
def test_import_lossdiag_does_not_import_torch():
    code = "import sys, lossdiag; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples():
    import doctest

    res = doctest.testmod(ldt, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


# ------------------------------------------------------------------------------------------------
# gradcheck (float64)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_cross_entropy(reduction):
    g = _seed(1)
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, generator=g, requires_grad=True)
    y = _labels((2, 3, 2), 4, g, ignore=-100)
    w = torch.rand(4, dtype=torch.float64, generator=g) + 0.1
    p = torch.softmax(torch.randn(2, 4, 3, 2, dtype=torch.float64, generator=g), 1)
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    for fn in (lambda x: ldt.cross_entropy(x, y, w, reduction=reduction, label_smoothing=0.2),
               lambda x: ldt.cross_entropy(x, p, w, reduction=reduction, label_smoothing=0.1)):
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradcheck(fn, (xc,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_bce(reduction):
    g = _seed(2)
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.rand(3, 4, 2, 2, dtype=torch.float64, generator=g)
    pw = torch.rand(4, 1, 1, dtype=torch.float64, generator=g) + 0.5
    w = torch.rand(2, dtype=torch.float64, generator=g)
    fn = lambda x: ldt.binary_cross_entropy_with_logits(  # noqa: E731
        x, t, w, reduction=reduction, pos_weight=pw)
    assert torch.autograd.gradcheck(fn, (x,))


# ------------------------------------------------------------------------------------------------
# every option against torch.nn.functional.cross_entropy
# ------------------------------------------------------------------------------------------------
LAYOUTS = {  # name: (logits shape, make the tensor)
    "NC": ((37, 5), lambda x: x),
    "NCL": ((3, 5, 11), lambda x: x),
    "NCHW": ((2, 5, 6, 7), lambda x: x),
    "channels_last": ((2, 5, 6, 7), lambda x: x.contiguous(memory_format=torch.channels_last)),
    "channels_last_3d": ((2, 4, 3, 4, 5),
                         lambda x: x.contiguous(memory_format=torch.channels_last_3d)),
    "strided": ((2, 5, 6, 14), lambda x: x[..., ::2]),  # non-contiguous: copied once
}
OPTIONS = {
    "plain": {},
    "weight": {"weight": "w"},
    "ignore": {"ignore_index": 3},
    "smooth": {"label_smoothing": 0.15},
    "all": {"weight": "w", "ignore_index": 0, "label_smoothing": 0.3},
}


# every option and every reduction, each reduction with and without weights
CE_COMBOS = [("plain", "mean"), ("plain", "none"), ("weight", "mean"), ("weight", "sum"),
             ("weight", "none"), ("ignore", "mean"), ("ignore", "none"), ("smooth", "sum"),
             ("all", "mean"), ("all", "none")]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("option,reduction", CE_COMBOS, ids="-".join)
def test_cross_entropy_matches_torch(layout, option, reduction):
    shape, make = LAYOUTS[layout]
    g = _seed(3)
    full = shape if layout != "strided" else shape
    x = make(torch.randn(full, generator=g, dtype=torch.float64) * 3)
    C = x.shape[1]
    kw = dict(OPTIONS[option], reduction=reduction)
    if kw.get("weight") == "w":
        kw["weight"] = torch.rand(C, generator=g, dtype=torch.float64) + 0.2
    y = _labels((x.shape[0], *x.shape[2:]), C, g, ignore=kw.get("ignore_index"))
    grad = _compare_ce(x, y, torch.float64, **kw)
    if layout.startswith("channels_last"):  # the gradient keeps the memory format (a view)
        fmt = torch.channels_last if layout == "channels_last" else torch.channels_last_3d
        assert grad.is_contiguous(memory_format=fmt)
    # soft targets (class probabilities), same layout
    p = make(torch.softmax(torch.randn(full, generator=g, dtype=torch.float64), 1))
    kw.pop("ignore_index", None)
    _compare_ce(x, p, torch.float64, **kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["NC", "NCHW", "channels_last"])
def test_cross_entropy_dtypes(dtype, layout):
    shape, make = LAYOUTS[layout]
    g = _seed(4)
    x = make(torch.randn(shape, generator=g) * 4)
    y = _labels((x.shape[0], *x.shape[2:]), x.shape[1], g, ignore=-100)
    for reduction in REDUCTIONS:
        _compare_ce(x, y, dtype, reduction=reduction, label_smoothing=0.1)
    p = make(torch.softmax(torch.randn(shape, generator=g), 1))
    _compare_ce(x, p, dtype)


def test_cross_entropy_unbatched_and_labels_dtypes():
    g = _seed(5)
    x = torch.randn(6, dtype=torch.float64, generator=g)
    for y in (torch.tensor(4), torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)):
        for reduction in REDUCTIONS:
            _compare_ce(x, y, torch.float64, reduction=reduction)
    x = torch.randn(4, 7, 5, dtype=torch.float64, generator=g)
    y = _labels((4, 5), 7, g)
    ref = _run(ldt.cross_entropy, x, y)
    for dt in (torch.uint8, torch.int16, torch.int32):  # read as they are, no conversion
        got = _run(ldt.cross_entropy, x, y.to(dt))
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_half_precision_loss_dtype_and_autocast():
    """float16/bfloat16 logits: the loss has their dtype, as torch's; under autocast float32, as
    torch's (which upcasts the logits; lossdiag computes in float32 without a copy)."""
    torch.manual_seed(0)
    net = nn.Conv2d(3, 5, 3, padding=1)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 5, (2, 8, 8))
    for dt in (torch.float16, torch.bfloat16):
        logits = net(x).detach().to(dt)
        assert ldt.cross_entropy(logits, y).dtype == F.cross_entropy(logits, y).dtype == dt
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
        assert out.dtype == torch.bfloat16
        mine, ref = ldt.cross_entropy(out, y), F.cross_entropy(out, y)
        assert mine.dtype == ref.dtype == torch.float32
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)
    (gm,) = torch.autograd.grad(mine * 1024.0, net.weight, retain_graph=True)
    (gr,) = torch.autograd.grad(ref * 1024.0, net.weight)
    torch.testing.assert_close(gm, gr, rtol=2e-2, atol=2e-2)


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
def test_legacy_reduction_arguments():
    g = _seed(6)
    x, y = torch.randn(5, 3, generator=g), torch.randint(0, 3, (5,), generator=g)
    for sa, r in ((False, None), (None, False), (True, True)):
        ref = F.cross_entropy(x, y, size_average=sa, reduce=r)
        torch.testing.assert_close(ldt.cross_entropy(x, y, size_average=sa, reduce=r), ref)


# ------------------------------------------------------------------------------------------------
# binary_cross_entropy_with_logits
# ------------------------------------------------------------------------------------------------
BCE_COMBOS = [(None, False, "mean"), (None, True, "none"), ("scalar", False, "none"),
              ("scalar", True, "sum"), ("C", True, "mean"), ("C", False, "none"),
              ("C11", True, "none"), ("C11", False, "sum")]


@pytest.mark.parametrize("layout", ["NC", "NCHW", "channels_last", "strided"])
@pytest.mark.parametrize("pw,weight,reduction", BCE_COMBOS, ids=str)
def test_bce_matches_torch(layout, pw, weight, reduction):
    shape, make = LAYOUTS[layout]
    g = _seed(8)
    x = make(torch.randn(shape, generator=g, dtype=torch.float64) * 3)
    t = make(torch.rand(shape, generator=g, dtype=torch.float64))
    C = x.shape[1]
    if pw == "C11" and x.dim() < 3:
        pw = "C"  # (C, 1, 1) needs spatial dimensions
    pos = {None: None, "scalar": torch.tensor(2.5, dtype=torch.float64),
           "C": torch.rand(x.shape[-1], generator=g, dtype=torch.float64) + 0.5,
           "C11": torch.rand(C, 1, 1, generator=g, dtype=torch.float64) + 0.5}[pw]
    w = torch.rand(x.shape[-1], generator=g, dtype=torch.float64) if weight else None
    kw = dict(reduction=reduction, pos_weight=pos)
    l1, g1 = _run(ldt.binary_cross_entropy_with_logits, x, t, w, **kw)
    l2, g2 = _run(F.binary_cross_entropy_with_logits, x, t, w, **kw)
    _close(l1, l2, torch.float64)
    _close(g1, g2, torch.float64, scale=float(g2.abs().max()))
    if layout == "channels_last":
        assert g1.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bce_dtypes(dtype):
    g = _seed(9)
    x = (torch.randn(4, 3, 5, 6, generator=g) * 4).to(dtype)
    t = (torch.rand(4, 3, 5, 6, generator=g) < 0.3).to(dtype)
    pw = torch.tensor([0.5, 1.0, 4.0]).view(3, 1, 1).to(dtype)
    for reduction in REDUCTIONS:
        l1, g1 = _run(ldt.binary_cross_entropy_with_logits, x, t, reduction=reduction,
                      pos_weight=pw)
        l2, g2 = _run(F.binary_cross_entropy_with_logits, x.double(), t.double(),
                      reduction=reduction, pos_weight=pw.double())
        assert l1.dtype == dtype and g1.dtype == dtype
        _close(l1, l2, dtype)
        _close(g1, g2, dtype, scale=float(g2.abs().max()))


# ------------------------------------------------------------------------------------------------
# the backward: scaling, retain_graph, double backward
# ------------------------------------------------------------------------------------------------
def test_backward_scaled_and_retain_graph():
    g = _seed(10)
    x0 = torch.randn(8, 5, 4, 4, generator=g, dtype=torch.float64)
    y = _labels((8, 4, 4), 5, g)
    x = x0.clone().requires_grad_(True)
    loss = ldt.cross_entropy(x, y)
    (a,) = torch.autograd.grad(loss * 3.0, x, retain_graph=True)
    (b,) = torch.autograd.grad(loss * -0.5, x, retain_graph=True)
    (c,) = torch.autograd.grad(loss, x)
    xr = x0.clone().requires_grad_(True)
    (r,) = torch.autograd.grad(F.cross_entropy(xr, y), xr)
    torch.testing.assert_close(a, 3.0 * r)
    torch.testing.assert_close(b, -0.5 * r)
    torch.testing.assert_close(c, r)


def test_double_backward_is_refused():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss = ldt.cross_entropy(x, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, x, create_graph=True)


def test_no_grad_needed_computes_the_loss_only():
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    loss = ldt.cross_entropy(x, y, inplace_backward=True)
    torch.testing.assert_close(loss, F.cross_entropy(x, y))
    assert not loss.requires_grad
    xr = x.clone().requires_grad_(True)
    with torch.no_grad():
        ldt.cross_entropy(xr * 1.0, y, inplace_backward=True)


# ------------------------------------------------------------------------------------------------
# inplace_backward
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["NC", "NCHW", "channels_last"])
@pytest.mark.parametrize("kind", ["ce", "bce"])
def test_inplace_backward(layout, kind):
    shape, make = LAYOUTS[layout]
    g = _seed(11)
    w = torch.randn(shape[1], shape[1], generator=g, dtype=torch.float64, requires_grad=True)
    x0 = make(torch.randn(shape, generator=g, dtype=torch.float64))
    if kind == "ce":
        y = _labels((shape[0], *shape[2:]), shape[1], g, ignore=1)
        fn = ldt.cross_entropy
    else:
        y = make(torch.rand(shape, generator=g, dtype=torch.float64))
        fn = ldt.binary_cross_entropy_with_logits
    grads = []
    for inplace in (False, True):
        w.grad = None
        # computed by a "model" (not a leaf, not a view: retain_grad and views do not mix with
        # in-place writes)
        logits = make(torch.einsum("dc,nc...->nd...", w, x0).contiguous() + 0.0)
        logits.retain_grad()
        ptr = logits.data_ptr()
        loss = fn(logits, y, reduction="sum", inplace_backward=inplace)
        (loss * 0.25).backward()
        if inplace:  # the logits' own memory now holds the (scaled) gradient
            assert logits.data_ptr() == ptr
            torch.testing.assert_close(logits.detach(), grads[0][1])
        grads.append((w.grad.clone(), logits.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_inplace_backward_refuses_what_autograd_refuses():
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    with pytest.raises(RuntimeError, match="leaf"):
        ldt.cross_entropy(x, y, inplace_backward=True)
    with pytest.raises(RuntimeError, match="leaf"):
        ldt.cross_entropy(x.view(4, 3), y, inplace_backward=True)
    # sigmoid saved its output for its own backward: overwriting it must fail loudly
    logits = torch.sigmoid(x)
    loss = ldt.cross_entropy(logits, y, inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_module_inplace_backward_in_a_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1))
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 4, (2, 8, 8))
    grads = []
    for crit in (nn.CrossEntropyLoss(ignore_index=2),
                 ldt.CrossEntropyLoss(ignore_index=2, inplace_backward=True)):
        net.zero_grad()
        crit(net(x), y).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_buffers_are_recycled_only_when_free():
    g = _seed(16)
    x0 = torch.randn(4, 5, 6, 6, generator=g)
    y = _labels((4, 6, 6), 5, g)
    xr = x0.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.cross_entropy(xr, y), xr)

    def grad(x):
        x = x.clone().requires_grad_(True)
        return torch.autograd.grad(ldt.cross_entropy(x, y), x)[0]

    ldt.empty_cache()
    g1 = grad(x0)
    p1 = g1.data_ptr()
    g2 = grad(x0 + 1.0)  # g1 is alive: another buffer, g1 untouched
    assert g2.data_ptr() != p1
    torch.testing.assert_close(g1, ref)
    del g1, g2
    g3 = grad(x0)  # free again: reused
    assert g3.data_ptr() == p1
    torch.testing.assert_close(g3, ref)
    # a graph not yet backpropagated keeps its gradient (the recycled buffer) busy
    del g3
    xx = x0.clone().requires_grad_(True)
    loss = ldt.cross_entropy(xx, y)
    g4 = grad(x0 + 2.0)
    assert g4.data_ptr() != p1
    (g5,) = torch.autograd.grad(loss * 2.0, xx)
    torch.testing.assert_close(g5, 2.0 * ref)
    ldt.empty_cache()
    assert not ldt._grad_buffers._bufs


# ------------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------------
def test_modules_are_drop_in():
    w = torch.tensor([1.0, 2.0, 0.5])
    crit = ldt.CrossEntropyLoss(weight=w, ignore_index=1, label_smoothing=0.1)
    assert isinstance(crit, nn.CrossEntropyLoss)
    ref = nn.CrossEntropyLoss(weight=w, ignore_index=1, label_smoothing=0.1)
    assert crit.state_dict().keys() == ref.state_dict().keys()
    assert "inplace_backward=False" in repr(crit)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 0, 1])
    torch.testing.assert_close(crit(x, y), ref(x, y))
    b = ldt.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0, 1.0, 0.5]), reduction="sum")
    assert isinstance(b, nn.BCEWithLogitsLoss)
    t = torch.rand(6, 3)
    torch.testing.assert_close(
        b(x, t), nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0, 1.0, 0.5]),
                                      reduction="sum")(x, t))


def test_bad_arguments():
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    with pytest.raises(TypeError, match="input: dtype torch.int64"):
        ldt.cross_entropy(y.view(2, 2), y[:2])
    with pytest.raises(TypeError, match="input: expected a torch.Tensor"):
        ldt.cross_entropy(x.detach().numpy(), y)
    with pytest.raises(ValueError, match="reduction"):
        ldt.cross_entropy(x, y, reduction="avg")
    with pytest.raises(ValueError, match="target: shape"):
        ldt.cross_entropy(x, y[:3])
    with pytest.raises(ValueError, match="label 7"):
        ldt.cross_entropy(x, torch.tensor([0, 7, 1, 1]))
    with pytest.raises(ValueError, match="target: requires grad"):
        ldt.cross_entropy(x, torch.rand(4, 3, requires_grad=True))
    with pytest.raises(ValueError, match="weight: on meta"):
        ldt.cross_entropy(x, y, weight=torch.ones(3, device="meta"))
    with pytest.raises(ValueError, match="target: size"):
        ldt.binary_cross_entropy_with_logits(x, torch.rand(4, 2))
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        ldt.binary_cross_entropy_with_logits(x, torch.full((4, 3), 2.0))


# ------------------------------------------------------------------------------------------------
# torch.compile / torch.library
# ------------------------------------------------------------------------------------------------
def test_opcheck():
    x = torch.randn(2, 5, 3, 3, requires_grad=True)
    y = torch.randint(0, 5, (2, 3, 3))
    torch.library.opcheck(torch.ops.lossdiag.cross_entropy.default,
                          (x, y, torch.rand(5), 7, "mean", 0.1, 1, True, False))
    torch.library.opcheck(torch.ops.lossdiag.binary_cross_entropy_with_logits.default,
                          (x, torch.rand(2, 5, 3, 3), torch.rand(5, 1, 1), "none", True, False))


def test_torch_compile_no_graph_break():
    import torch._dynamo as dynamo

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1))
    crit = ldt.CrossEntropyLoss(label_smoothing=0.1, ignore_index=255)
    bce = ldt.BCEWithLogitsLoss(pos_weight=torch.full((5, 1, 1), 2.0))

    def fwd(x, y, t):
        out = net(x)
        return crit(out, y) + 0.5 * bce(out, t)

    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 5, (2, 8, 8))
    y[0, 0] = 255
    t = torch.rand(2, 5, 8, 8)
    explain = dynamo.explain(fwd)(x, y, t)
    assert explain.graph_break_count == 0 and explain.graph_count == 1, explain.break_reasons
    dynamo.reset()
    compiled = torch.compile(fwd, backend="aot_eager", fullgraph=True)
    for xx in (x, x.contiguous(memory_format=torch.channels_last)):
        net.zero_grad()
        lc = compiled(xx, y, t)
        (lc * 0.5).backward()
        gc = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        le = fwd(xx, y, t)
        (le * 0.5).backward()
        torch.testing.assert_close(lc, le)
        for a, b in zip(gc, (p.grad for p in net.parameters())):
            torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------------
# training follows torch's trajectory
# ------------------------------------------------------------------------------------------------
def test_training_trajectory_matches_torch():
    def train(crit):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                            nn.Conv2d(8, 6, 3, padding=1))
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        g = _seed(12)
        losses = []
        for _ in range(5):
            x = torch.randn(4, 3, 10, 10, generator=g)
            y = torch.randint(0, 6, (4, 10, 10), generator=g)
            y[:, :2] = 255
            opt.zero_grad()
            loss = crit(net(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, [p.detach().clone() for p in net.parameters()]

    kw = dict(ignore_index=255, label_smoothing=0.05, weight=torch.linspace(0.5, 2.0, 6))
    l_ref, p_ref = train(nn.CrossEntropyLoss(**kw))
    for crit in (ldt.CrossEntropyLoss(**kw), ldt.CrossEntropyLoss(**kw, inplace_backward=True)):
        l_ld, p_ld = train(crit)
        np.testing.assert_allclose(l_ld, l_ref, rtol=2e-5)
        assert l_ld[-1] < l_ld[0]
        for a, b in zip(p_ld, p_ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# torch tensors in the plain API
# ------------------------------------------------------------------------------------------------
def test_plain_functions_accept_tensors():
    g = _seed(13)
    x = torch.randn(3, 4, 5, 6, generator=g)
    y = _labels((3, 5, 6), 4, g, ignore=-100)
    xn, yn = x.numpy(), y.numpy()
    assert ld.cross_entropy(x, y) == ld.cross_entropy(xn, yn)
    none = ld.cross_entropy(x, y, reduction="none")
    assert isinstance(none, torch.Tensor) and none.dtype == torch.float32
    np.testing.assert_array_equal(none.numpy(), ld.cross_entropy(xn, yn, reduction="none"))
    loss, grad = ld.cross_entropy_grad(x, y)
    assert isinstance(grad, torch.Tensor) and grad.shape == x.shape
    np.testing.assert_array_equal(grad.numpy(), ld.cross_entropy_grad(xn, yn)[1])
    assert ld.accuracy(x, y) == ld.accuracy(xn, yn)
    st, sn = ld.evaluate(x, y, top_k=(1, 2)), ld.evaluate(xn, yn, top_k=(1, 2))
    np.testing.assert_array_equal(st.confusion, sn.confusion)
    assert st.loss == sn.loss
    m = ld.Metrics(4)
    m.update(x, y)
    assert m.compute()["accuracy"] == st.accuracy
    t = torch.rand(3, 4, 5, 6, generator=g)
    assert ld.binary_cross_entropy(x, t) == ld.binary_cross_entropy(xn, t.numpy())
    assert ld.evaluate_binary(x, t).loss == ld.binary_cross_entropy(xn, t.numpy())
    # in place into a tensor: the same tensor comes back
    buf = x.clone()
    _, gb = ld.cross_entropy_grad(buf, y, out=buf)
    assert gb is buf
    torch.testing.assert_close(buf, grad, rtol=0, atol=0)


def test_plain_functions_and_requires_grad():
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    for fn, args in ((ld.cross_entropy, (x, y)),
                     (ld.binary_cross_entropy, (x, torch.rand(4, 3)))):
        with pytest.raises(TypeError, match="lossdiag.torch"):
            fn(*args)
        with torch.no_grad():
            fn(*args)  # nothing to drop
        fn(args[0].detach(), args[1])
    # metrics read a detached view
    assert ld.accuracy(x, y) == ld.accuracy(x.detach().numpy(), y.numpy())
    assert ld.evaluate(x, y).loss == ld.cross_entropy(x.detach(), y)
    m = ld.Metrics(3)
    m.update(x, y)
    assert m.compute()["count"] == 4
    # cross_entropy_grad returns the gradient explicitly: nothing is dropped silently
    loss, g = ld.cross_entropy_grad(x, y)
    assert not g.requires_grad


def test_plain_functions_bfloat16():
    g = _seed(14)
    x = (torch.randn(2, 5, 4, 3, generator=g) * 3).to(torch.bfloat16)
    y = _labels((2, 4, 3), 5, g)
    xf = x.float()
    loss, grad = ld.cross_entropy_grad(x, y, label_smoothing=0.1)
    lf, gf = ld.cross_entropy_grad(xf, y, label_smoothing=0.1)
    assert grad.dtype == torch.bfloat16 and loss == lf  # computed in float32, same values
    assert torch.equal(grad, gf.to(torch.bfloat16))  # rounded to nearest even, as torch
    none = ld.cross_entropy(x, y, reduction="none")
    assert none.dtype == torch.float32
    torch.testing.assert_close(none, ld.cross_entropy(xf, y, reduction="none"), rtol=0, atol=0)
    p = torch.softmax(torch.randn(2, 5, 4, 3, generator=g), 1).to(torch.bfloat16)
    assert ld.cross_entropy(x, p) == ld.cross_entropy(xf, p.float())
    st = ld.evaluate(x, y, grad=True)
    assert st.loss == ld.evaluate(xf, y).loss
    assert torch.equal(st.grad, ld.cross_entropy_grad(x, y)[1])
    t = torch.rand(2, 5, 4, 3, generator=g).to(torch.bfloat16)
    lb, gb = ld.binary_cross_entropy_grad(x, t, pos_weight=2.0)
    lbf, gbf = ld.binary_cross_entropy_grad(xf, t.float(), pos_weight=2.0)
    assert lb == lbf and torch.equal(gb, gbf.to(torch.bfloat16))


def test_ml_dtypes_bfloat16_arrays():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    r = np.random.default_rng(15)
    xf = r.normal(size=(6, 4)).astype(ml_dtypes.bfloat16).astype(np.float32)
    x = xf.astype(ml_dtypes.bfloat16)
    y = r.integers(0, 4, 6)
    loss, g = ld.cross_entropy_grad(x, y)
    lf, gf = ld.cross_entropy_grad(xf, y)
    assert loss == lf and g.dtype == x.dtype
    np.testing.assert_array_equal(g.astype(np.float32),
                                  gf.astype(ml_dtypes.bfloat16).astype(np.float32))


# ------------------------------------------------------------------------------------------------
# CUDA (runs only with a GPU, CuPy and lossdiag's CUDA backend)
# ------------------------------------------------------------------------------------------------
def _cuda_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import cupy  # noqa: F401
        from lossdiag import _cuda  # noqa: F401
    except ImportError:
        return False
    return True


cuda = pytest.mark.skipif(not _cuda_ready(), reason="needs a CUDA device, CuPy and lossdiag._cuda")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cuda_matches_torch(dtype, reduction):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(4, 21, 16, 12, device="cuda", generator=g) * 3).to(dtype)
    y = torch.randint(0, 21, (4, 16, 12), device="cuda", generator=g)
    w = torch.rand(21, device="cuda", generator=g) + 0.5
    for xx in (x, x.contiguous(memory_format=torch.channels_last)):
        l1, g1 = _run(ldt.cross_entropy, xx, y, w, reduction=reduction, label_smoothing=0.1)
        l2, g2 = _run(F.cross_entropy, xx.double(), y, w.double(), reduction=reduction,
                      label_smoothing=0.1)
        assert l1.device.type == "cuda" and g1.device.type == "cuda" and g1.dtype == dtype
        _close(l1, l2, dtype)
        _close(g1, g2, dtype, scale=float(g2.abs().max()))
    t = torch.rand(x.shape, device="cuda", generator=g).to(dtype)
    l1, g1 = _run(ldt.binary_cross_entropy_with_logits, x, t, reduction=reduction)
    l2, g2 = _run(F.binary_cross_entropy_with_logits, x.double(), t.double(), reduction=reduction)
    _close(l1, l2, dtype)
    _close(g1, g2, dtype, scale=float(g2.abs().max()))


@cuda
def test_cuda_inplace_and_compile():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1)).cuda()
    x = torch.randn(2, 3, 16, 16, device="cuda")
    y = torch.randint(0, 5, (2, 16, 16), device="cuda")
    grads = []
    for crit in (nn.CrossEntropyLoss(), ldt.CrossEntropyLoss(inplace_backward=True)):
        net.zero_grad()
        (crit(net(x), y) * 2.0).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    compiled = torch.compile(lambda x, y: ldt.cross_entropy(net(x), y), backend="aot_eager",
                             fullgraph=True)
    torch.testing.assert_close(compiled(x, y), F.cross_entropy(net(x), y))


# ------------------------------------------------------------------------------------------------
# the benchmark script runs (tiny shape, no timing assertions)
# ------------------------------------------------------------------------------------------------
def test_bench_torch_smoke(tmp_path, restore_threads):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "bench_torch.py"
    spec = importlib.util.spec_from_file_location("bench_torch", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    out = tmp_path / "b.json"
    try:
        assert bench.main(["--shape", "2", "3", "16", "16", "--rounds", "1", "--train-rounds",
                           "1", "--warmup", "0", "--skip", "memory", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads(out.read_text())
    assert set(res["loss_fwd_bwd"]) >= {"torch", "lossdiag", "lossdiag inplace"}
    assert set(res["train_step"]) == {"torch", "lossdiag", "lossdiag inplace"}
    mem = bench.memory_child("lossdiag inplace", (2, 3, 64, 64))
    assert mem["grad_is_logits"] and mem["extra_buffers"] >= 0
