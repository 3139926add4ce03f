"""Small, real training runs with planted problems (the validation suite and the demo).

Each scenario trains a NumPy model whose backward pass starts from
``lossdiag.cross_entropy_grad`` (the gradient of the loss at the logits) and records, every
epoch, the training loss/accuracy, the validation metrics and the full validation statistics
from ``lossdiag.Metrics(...).compute()`` into a :class:`lossdiag.history.History`.

Two models:

* ``"mlp"``: a one-hidden-layer ReLU network on a Gaussian-cluster classification task;
* ``"seg"``: a per-pixel softmax classifier (a 1x1 convolution) over fixed per-pixel features
  (the pixel's noisy class signature and its 3x3 neighbourhood mean) of 16x16 synthetic
  segmentation images made of random blobs.

Planted causes (see :data:`SCENARIOS` for the exact settings and the expected finding codes):
a learning rate far too high (diverging) or far too low (stuck), heavy class imbalance (stuck
at the class prior, majority-class collapse), a tiny training set with an over-large
unregularised model (overfitting), ambiguous labels (validation loss flat while accuracy
rises), near-separable data with a small learning rate (slow tail), a large learning rate with a
tiny batch (oscillating), and healthy runs.

>>> from lossdiag.demo.scenarios import SCENARIOS, run_scenario
>>> from lossdiag.diagnosis import diagnose
>>> SCENARIOS["stuck-lr-low-seg"].expected
('stuck',)
>>> h = run_scenario("stuck-lr-low-seg", seed=0, quick=True)   # needs the compiled core
>>> diagnose(h).get("stuck").cause
'lr-too-low'
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from ..history import History

__all__ = ["SCENARIOS", "Scenario", "run_scenario"]

ProgressArg = Union[None, bool, Callable[[int, int, Mapping[str, float]], None]]


@dataclass(frozen=True)
class Scenario:
    """One planted training situation.

    ``expected`` are the finding codes the diagnosis must report (with the cause in
    ``causes`` where given); ``allowed`` are codes that may also appear without counting as
    false alarms (they describe the same run truthfully, e.g. ``overconfident`` next to
    ``overfitting``).  ``params`` are the model/data/optimiser settings.
    """

    name: str
    model: str
    description: str
    expected: tuple[str, ...]
    causes: Mapping[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


# Defaults shared by all scenarios; each scenario overrides some of them.
_MLP_DEFAULTS: dict[str, Any] = dict(
    num_classes=4, n_train=1200, n_val=600, dim_signal=8, dim_noise=8, sep=2.0,
    hidden=32, lr=0.05, momentum=0.9, batch=32, epochs=40, weight_decay=0.0,
    label_noise=0.0, val_label_noise=None, class_prior=None, lr_schedule=None, init_scale=1.0,
    clusters=1, corrupt_epoch=None)
_SEG_DEFAULTS: dict[str, Any] = dict(
    num_classes=4, size=16, n_train=48, n_val=16, features=6, sep=1.0, noise=1.5,
    lr=0.5, momentum=0.9, batch=8, epochs=40, weight_decay=0.0, label_noise=0.0,
    val_label_noise=None, corrupt_epoch=None,
    class_prior=None, lr_schedule=None, blob=2.0)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("healthy-mlp", "mlp", "well-tuned MLP: enough data, small weight decay", (),
                 params=dict(n_train=4000, dim_noise=2, hidden=16, lr=0.01,
                             weight_decay=1e-3, epochs=25)),
        Scenario("healthy-seg", "seg", "well-tuned per-pixel classifier", (),
                 params=dict(lr=0.3, epochs=30)),
        Scenario("diverging-mlp", "mlp", "learning rate warmed up to ~50x too high (SGD + "
                 "momentum): the loss grows exponentially once the LR passes ~0.3",
                 ("diverging",), causes={"diverging": "lr-too-high"}, allowed=("non-finite",),
                 params=dict(lr=1.0, lr_schedule={"kind": "warmup", "epochs": 15},
                             epochs=30)),
        Scenario("diverging-const-mlp", "mlp", "constant learning rate ~50x too high",
                 ("diverging",), causes={"diverging": "lr-too-high"}, allowed=("non-finite",),
                 params=dict(lr=1.0, epochs=30)),
        Scenario("stuck-lr-low-seg", "seg", "learning rate ~10,000x too low",
                 ("stuck",), causes={"stuck": "lr-too-low"},
                 params=dict(lr=3e-5, momentum=0.0, epochs=30)),
        Scenario("stuck-lr-low-mlp", "mlp", "learning rate ~10,000x too low",
                 ("stuck",), causes={"stuck": "lr-too-low"},
                 params=dict(lr=2e-6, momentum=0.0, epochs=30)),
        Scenario("imbalance-mlp", "mlp", "92/4/4 class split with weak features: the model "
                 "predicts the majority class", ("stuck", "class-imbalance"),
                 causes={"stuck": "majority-collapse"},
                 params=dict(num_classes=3, class_prior=(0.92, 0.04, 0.04), sep=0.2,
                             hidden=16, dim_noise=4, n_val=1500, lr=0.01, epochs=30)),
        Scenario("overfitting-mlp", "mlp", "100 training samples, 512 hidden units, 60 noise "
                 "features, no regularisation", ("overfitting",),
                 causes={"overfitting": "val-loss-rising"}, allowed=("overconfident",),
                 params=dict(n_train=100, dim_noise=60, hidden=512, sep=1.0, lr=0.004,
                             batch=20, epochs=60)),
        Scenario("overconfident-mlp", "mlp", "20% noisy training and validation labels "
                 "memorised by a large MLP: validation loss and calibration error grow, "
                 "accuracy does not",
                 ("overfitting", "overconfident"),
                 causes={"overconfident": "confident-mistakes"},
                 params=dict(n_train=400, label_noise=0.2, dim_noise=10, hidden=256, sep=1.5,
                             lr=0.01, batch=20, epochs=60)),
        Scenario("nan-input-mlp", "mlp", "a corrupted sample with inf features enters the training "
                 "set at epoch 12: the loss becomes NaN suddenly", ("non-finite",),
                 causes={"non-finite": "sudden"},
                 params=dict(n_train=2000, dim_noise=2, hidden=16, lr=0.01, corrupt_epoch=12,
                             epochs=30)),
        Scenario("noisy-labels-mlp", "mlp", "ambiguous validation labels (35% random) on "
                 "multi-cluster classes: validation loss flat while accuracy rises",
                 ("loss-accuracy-decoupling",),
                 causes={"loss-accuracy-decoupling": "loss-flat-accuracy-rising"},
                 allowed=("overfitting", "overconfident"),
                 params=dict(num_classes=4, n_train=2000, clusters=3, sep=2.0, dim_noise=4,
                             hidden=64, label_noise=0.1, val_label_noise=0.35, lr=0.001,
                             epochs=50)),
        Scenario("slow-tail-seg", "seg", "near-separable pixels, small learning rate: "
                 "diminishing returns", ("slow-tail",), params=dict(
                     sep=3.0, noise=0.5, lr=0.01, momentum=0.0, epochs=50)),
        Scenario("oscillating-mlp", "mlp", "large learning rate with a batch of 2 (the noise "
                 "also inflates the weights: confident mistakes may follow)",
                 ("oscillating",), causes={"oscillating": "lr-batch-noise"},
                 allowed=("overconfident",), params=dict(
                     n_train=1200, dim_noise=2, batch=2, lr=0.25, momentum=0.0, epochs=30)),
        Scenario("oscillating-seg", "seg", "large learning rate with a batch of 1 image",
                 ("oscillating",), causes={"oscillating": "lr-batch-noise"}, params=dict(
                     batch=1, lr=10.0, momentum=0.0, epochs=30)),
    ]
}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def _mlp_data(p: Mapping[str, Any], rng: np.random.Generator, n: int, noise: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian clusters: returns features, observed labels, clean labels."""
    c = p["num_classes"]
    prior = np.full(c, 1.0 / c) if p["class_prior"] is None else np.asarray(p["class_prior"])
    y = rng.choice(c, size=n, p=prior / prior.sum())
    return (*_mlp_features(p, y, rng, noise), y)


def _mlp_features(p: Mapping[str, Any], y: np.ndarray, rng: np.random.Generator,
                  noise: float) -> tuple[np.ndarray, np.ndarray]:
    c, ds, dn = p["num_classes"], p["dim_signal"], p["dim_noise"]
    means = p["_means"]  # (c, clusters, ds)
    j = rng.integers(0, means.shape[1], size=len(y))
    x = np.concatenate([means[y, j] + rng.standard_normal((len(y), ds)),
                        rng.standard_normal((len(y), dn))], axis=1).astype(np.float32)
    obs = y.copy()
    if noise > 0:
        flip = rng.random(len(y)) < noise
        obs[flip] = rng.integers(0, c, size=int(flip.sum()))
    return x, obs


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur over the last two axes (via FFT)."""
    s = a.shape[-1]
    f = np.fft.fftfreq(s)
    k = np.exp(-2 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(a) * k))


def _seg_data(p: Mapping[str, Any], rng: np.random.Generator, n: int, noise: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c, s, f = p["num_classes"], p["size"], p["features"]
    fields = _blur(rng.standard_normal((n, c, s, s)), p["blob"])
    fields /= fields.std(axis=(2, 3), keepdims=True) + 1e-12
    if p["class_prior"] is not None:
        fields += np.log(np.asarray(p["class_prior"]))[None, :, None, None] * 2.0
    y = fields.argmax(axis=1)
    sig = p["_means"]  # (c, f) class signatures
    pix = np.moveaxis(sig[y], -1, 1) + p["noise"] * rng.standard_normal((n, f, s, s))
    ctx = _box3(pix)
    x = np.concatenate([pix, ctx], axis=1).astype(np.float32)
    obs = y.copy()
    if noise > 0:
        flip = rng.random(y.shape) < noise
        obs[flip] = rng.integers(0, c, size=int(flip.sum()))
    return x, obs, y


def _box3(a: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out += np.roll(np.roll(a, dy, axis=-2), dx, axis=-1)
    return out / 9.0


# --------------------------------------------------------------------------------------------
# models (forward, backward from the logits gradient, SGD with momentum)
# --------------------------------------------------------------------------------------------


class _MLP:
    def __init__(self, d: int, h: int, c: int, rng: np.random.Generator, scale: float) -> None:
        self.params = {
            "w1": (rng.standard_normal((d, h)) * math.sqrt(2.0 / d) * scale).astype(np.float32),
            "b1": np.zeros(h, np.float32),
            "w2": (rng.standard_normal((h, c)) * math.sqrt(1.0 / h) * scale).astype(np.float32),
            "b2": np.zeros(c, np.float32),
        }
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def forward(self, x: np.ndarray, *, train: bool = False) -> np.ndarray:
        p = self.params
        pre = x @ p["w1"] + p["b1"]
        hid = np.maximum(pre, 0.0)
        if train:
            self._cache = (x, hid)
        return hid @ p["w2"] + p["b2"]

    def backward(self, g: np.ndarray) -> dict[str, np.ndarray]:
        assert self._cache is not None
        x, hid = self._cache
        p = self.params
        dh = (g @ p["w2"].T) * (hid > 0)
        return {"w2": hid.T @ g, "b2": g.sum(0), "w1": x.T @ dh, "b1": dh.sum(0)}


class _PixelSoftmax:
    """Logits (N, C, H, W) = W @ features (N, F, H, W) + b: a 1x1 convolution."""

    def __init__(self, f: int, c: int, rng: np.random.Generator) -> None:
        self.params = {"w": (0.01 * rng.standard_normal((c, f))).astype(np.float32),
                       "b": np.zeros(c, np.float32)}
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray, *, train: bool = False) -> np.ndarray:
        if train:
            self._x = x
        return (np.einsum("cf,nfhw->nchw", self.params["w"], x, optimize=True)
                + self.params["b"][None, :, None, None])

    def backward(self, g: np.ndarray) -> dict[str, np.ndarray]:
        assert self._x is not None
        return {"w": np.einsum("nchw,nfhw->cf", g, self._x, optimize=True),
                "b": g.sum(axis=(0, 2, 3))}


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def _params(sc: Scenario, quick: bool) -> dict[str, Any]:
    base = dict(_MLP_DEFAULTS if sc.model == "mlp" else _SEG_DEFAULTS)
    base.update(sc.params)
    if base.get("val_label_noise") is None:
        base["val_label_noise"] = base["label_noise"]
    if quick:
        base["epochs"] = max(12, int(base["epochs"] * 0.6))
    return base


def _lr_at(p: Mapping[str, Any], epoch: int) -> float:
    lr = float(p["lr"])
    sched = p.get("lr_schedule")
    if sched and sched.get("kind") == "step":
        lr *= sched["gamma"] ** (epoch // sched["every"])
    elif sched and sched.get("kind") == "warmup":
        lr *= min(1.0, (epoch + 1) / sched["epochs"])
    return lr


def run_scenario(name: str, seed: int = 0, *, quick: bool = False,
                 progress: ProgressArg = None) -> History:
    """Train the scenario ``name`` with ``seed`` and return its :class:`History`.

    ``quick`` trains ~40% fewer epochs (for demos and smoke tests); ``progress`` is ``True``
    for a tqdm bar or a callable ``progress(epoch, epochs, record)``.  Deterministic per
    (name, seed, quick).  Requires the compiled lossdiag core.
    """
    if not isinstance(name, str) or name not in SCENARIOS:
        raise ValueError(f"name must be one of {sorted(SCENARIOS)}, got {name!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    import lossdiag as ld  # the compiled core: cross_entropy_grad, accuracy, Metrics

    sc = SCENARIOS[name]
    p = _params(sc, quick)
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode()), 20240531])
    c = p["num_classes"]

    if sc.model == "mlp":
        dirs = rng.standard_normal((c, p["clusters"], p["dim_signal"]))
        p["_means"] = p["sep"] * dirs / np.linalg.norm(dirs, axis=-1, keepdims=True) * 1.5
        xtr, ytr, _ = _mlp_data(p, rng, p["n_train"], p["label_noise"])
        xva, yva, _ = _mlp_data(p, rng, p["n_val"], p["val_label_noise"])
        model: Any = _MLP(xtr.shape[1], p["hidden"], c, rng, p["init_scale"])
    else:
        sig = rng.standard_normal((c, p["features"]))
        p["_means"] = p["sep"] * sig / np.linalg.norm(sig, axis=1, keepdims=True) * 2.0
        xtr, ytr, _ = _seg_data(p, rng, p["n_train"], p["label_noise"])
        xva, yva, _ = _seg_data(p, rng, p["n_val"], p["val_label_noise"])
        model = _PixelSoftmax(xtr.shape[1], c, rng)

    meta = {"scenario": name, "seed": int(seed), "quick": bool(quick), "model": sc.model,
            "description": sc.description, "expected": list(sc.expected),
            "causes": dict(sc.causes), "allowed": list(sc.allowed),
            "batch_size": int(p["batch"]), "optimizer": "SGD",
            "momentum": float(p["momentum"]), "n_train": int(p["n_train"])}
    hist = History(num_classes=c, source=f"scenario {name} (seed {seed})", meta=meta)
    velocity = {k: np.zeros_like(v) for k, v in model.params.items()}
    epochs = int(p["epochs"])
    bar = None
    if progress is True:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs, desc=name, leave=False)
    n = len(ytr)
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):
        for epoch in range(epochs):
            lr = _lr_at(p, epoch)
            if p["corrupt_epoch"] is not None and epoch == p["corrupt_epoch"]:
                # a corrupted sample appears (e.g. a bad file / augmentation bug): inf inputs
                xtr = xtr.copy()
                xtr[int(rng.integers(0, n))] = np.inf
            perm = rng.permutation(n)
            loss_sum = 0.0
            correct = 0.0
            seen = 0
            for i in range(0, n, p["batch"]):
                bi = perm[i:i + p["batch"]]
                xb, yb = xtr[bi], ytr[bi]
                logits = model.forward(xb, train=True)
                loss, g = ld.cross_entropy_grad(logits, yb)
                grads = model.backward(g)
                k = yb.size
                loss_sum += float(loss) * k
                correct += float(ld.accuracy(logits, yb)) * k
                seen += k
                for key, par in model.params.items():
                    gr = grads[key]
                    if p["weight_decay"]:
                        gr = gr + p["weight_decay"] * par
                    v = velocity[key]
                    v *= p["momentum"]
                    v += gr
                    par -= lr * v
            metrics = ld.Metrics(c)
            metrics.update(model.forward(xva), yva)
            st = metrics.compute()
            val = {"loss": float(st["loss"]), "accuracy": float(st["accuracy"])}
            if sc.model == "seg":
                val["mean_iou"] = float(st["mean_iou"])
            train = {"loss": loss_sum / seen, "accuracy": correct / seen}
            hist.log(epoch, train=train, val=val, lr=lr, stats=st)
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                progress(epoch, epochs, {**{f"train_{k}": v for k, v in train.items()},
                                         **{f"val_{k}": v for k, v in val.items()}})
            if not (math.isfinite(train["loss"]) and math.isfinite(val["loss"])):
                break  # like Keras' TerminateOnNaN: nothing more to learn from this run
    if bar is not None:
        bar.close()
    hist.meta["train_seconds"] = round(time.perf_counter() - t0, 3)
    return hist
