"""``lossdiag demo [--out DIR] [--quick]``: train small real models with planted problems,
diagnose every run, and write one self-contained HTML report.

The runs come from :mod:`lossdiag.demo.scenarios` (the same trainer the diagnosis layer's
validation suite uses): NumPy models -- a per-pixel softmax segmenter on synthetic blob images
and a one-hidden-layer MLP classifier -- whose backward pass starts from
``lossdiag.cross_entropy_grad`` and whose validation statistics come from
``lossdiag.Metrics`` every epoch.  The situations are those of the questions the product
explains: a healthy run, a learning rate far too high (the loss grows exponentially), heavy
class imbalance (stuck at the majority class), a tiny training set without regularisation
(overfitting), ambiguous classes (validation loss flat while accuracy rises) and near-separable
data with a small learning rate (a slow, near-linear tail).

The report ends with the loss landscape of a two-weight logistic regression -- the exact
binary cross-entropy surface from :func:`lossdiag.landscape.logistic_surface` -- with the
gradient-descent trajectory drawn on it.

>>> import argparse
>>> from lossdiag import demo
>>> parser = argparse.ArgumentParser(prog="lossdiag")
>>> _ = demo.add_parser(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["demo", "--quick", "--out", "/tmp/ld-demo"])
>>> args.out, args.quick, args.func is demo.run
('/tmp/ld-demo', True, True)
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..diagnosis import Diagnosis
    from ..history import History
    from ..landscape import Landscape

__all__ = ["DEMO_SCENARIOS", "add_parser", "logistic_example", "run"]

#: (scenario name in lossdiag.demo.scenarios, what the reader should take from it)
DEMO_SCENARIOS: tuple[tuple[str, str], ...] = (
    ("healthy-seg", "Healthy run (segmentation): both losses fall and level off together."),
    ("healthy-mlp", "Healthy run (classification): enough data, a tuned learning rate, a little "
                    "weight decay."),
    ("diverging-mlp", "Learning rate far too high: the loss grows exponentially once the "
                      "warm-up reaches it (\"Why is the CNN loss increasing exponentially?\")."),
    ("imbalance-mlp", "Heavy class imbalance (92/4/4): the model predicts the majority class and "
                      "the loss stops at the prior's entropy (\"Why does loss not decrease in "
                      "binary classification?\")."),
    ("overfitting-mlp", "Tiny training set, large model, no regularisation: training loss falls, "
                        "validation loss turns and rises."),
    ("noisy-labels-mlp", "Ambiguous classes: validation loss stays flat while accuracy keeps "
                         "rising (\"loss and accuracy decoupled\")."),
    ("slow-tail-seg", "Near-separable pixels with a small learning rate: the loss keeps falling "
                      "on a slow, almost straight line (\"Why are cross-entropy validation "
                      "losses a straight line?\")."),
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "demo", help="train small models with planted problems, diagnose them, write a report",
        description="Train small NumPy models (per-pixel segmentation and classification) in "
                    "planted situations -- healthy, learning rate too high, class imbalance, "
                    "overfitting, ambiguous classes, slow tail -- diagnose every run and write "
                    "DIR/report.html (self-contained) with the annotated curves, confidence "
                    "histograms, explanations and a loss landscape.")
    p.add_argument("--out", metavar="DIR", default="lossdiag-demo",
                   help="output directory (default: lossdiag-demo)")
    p.add_argument("--quick", action="store_true",
                   help="fewer epochs and a coarser landscape (about 5 s instead of 15 s "
                        "on 2 cores)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default: 0)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    p.set_defaults(func=run)
    return p


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


# --------------------------------------------------------------------------------------------
# the logistic-regression landscape example
# --------------------------------------------------------------------------------------------


def logistic_example(*, quick: bool = False, seed: int = 0, steps: int = 150
                     ) -> tuple[Landscape, Landscape]:
    """The two-weight logistic regression of the "loss landscape" lesson, trained by gradient
    descent from a poor start; returns ``(surface with the trajectory, interpolation line)``.

    The two features have different scales (1 and 2.5), so the valley of the loss is long and
    narrow: gradient descent drops into it quickly and then crawls along it.  The gradient at
    the logits comes from ``lossdiag.binary_cross_entropy_grad``.

    >>> surf, line = logistic_example(quick=True)
    >>> surf.path.shape, surf.loss.shape
    ((151, 2), (61, 61))
    >>> bool(surf.path_loss[-1] < surf.path_loss[0])
    True
    """
    import lossdiag as ld

    from ..landscape import interpolate, logistic_surface

    rng = np.random.default_rng([seed, 3])
    n = 2000 if quick else 10_000
    X = rng.standard_normal((n, 2)) * np.array([1.0, 2.5])
    w_true = np.array([2.0, -1.2])
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ w_true)))).astype(np.float64)
    w = np.array([-3.5, 3.0])
    lr = 0.12
    path, losses = [w.copy()], []
    for _ in range(steps):
        z = X @ w
        loss, g = ld.binary_cross_entropy_grad(z, y)   # g = dL/dz (mean reduction)
        losses.append(float(loss))
        w = w - lr * (X.T @ g)
        path.append(w.copy())
    losses.append(float(ld.binary_cross_entropy(X @ w, y)))
    pts = np.array(path)
    g = 61 if quick else 101
    lo = np.minimum(pts.min(axis=0), w_true) - 1.0
    hi = np.maximum(pts.max(axis=0), w_true) + 1.0
    w1 = np.linspace(lo[0], hi[0], g)
    w2 = np.linspace(lo[1], hi[1], g)
    surf = logistic_surface(X, y, w1, w2, progress=False).with_path(pts, losses)
    surf.meta.update(samples=n, lr=lr, steps=steps, w_true=w_true.tolist())

    def f(p: list[np.ndarray]) -> float:
        return ld.binary_cross_entropy(X @ p[0], y)

    line = interpolate([pts[0]], [pts[-1]], f, steps=41 if quick else 81,
                       alpha_range=(-0.25, 1.25))
    return surf, line


# --------------------------------------------------------------------------------------------
# running the scenarios
# --------------------------------------------------------------------------------------------


@dataclass
class _Run:
    name: str
    blurb: str
    history: History
    diagnosis: Diagnosis
    seconds: float
    expected: tuple[str, ...]
    fragment: str = ""
    images: dict[str, str] = field(default_factory=dict)

    @property
    def codes(self) -> list[str]:
        return self.diagnosis.codes

    @property
    def missed(self) -> list[str]:
        return [c for c in self.expected if c not in self.codes]

    def top_recommendation(self) -> str:
        for f in self.diagnosis.findings:
            if f.recommendations:
                r = f.recommendations[0]
                return r.action + (f" ({r.magnitude})" if r.magnitude else "")
        return "none needed" if not self.diagnosis.findings else "-"


def _train_all(names: Sequence[tuple[str, str]], *, quick: bool, seed: int,
               progress: bool) -> list[_Run]:
    from ..diagnosis import diagnose
    from .scenarios import SCENARIOS, run_scenario

    runs: list[_Run] = []
    bar = None
    lines = progress and not sys.stderr.isatty()   # logs and pipes: one line per run
    if progress and not lines:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names), unit="run", desc="training", file=sys.stderr,
                   leave=False, dynamic_ncols=True)
    try:
        for name, blurb in names:
            if name not in SCENARIOS:
                print(f"lossdiag demo: scenario {name!r} is not in lossdiag.demo.scenarios; "
                      "skipped",
                      file=sys.stderr)
                if bar is not None:
                    bar.update(1)
                continue

            def cb(epoch: int, epochs: int, rec: Any, _name: str = name) -> None:
                if bar is not None:
                    vl = rec.get("val_loss") if hasattr(rec, "get") else None
                    extra = f" val_loss {vl:.3g}" if isinstance(vl, float) else ""
                    bar.set_postfix_str(f"{_name} epoch {epoch + 1}/{epochs}{extra}",
                                        refresh=False)

            t0 = time.perf_counter()
            h = run_scenario(name, seed, quick=quick, progress=cb if bar is not None else None)
            d = diagnose(h)
            runs.append(_Run(name, blurb, h, d, time.perf_counter() - t0,
                             tuple(SCENARIOS[name].expected)))
            if bar is not None:
                bar.update(1)
            elif lines:
                print(f"  [{len(runs)}/{len(names)}] {name}: {len(h)} epochs, "
                      f"{_secs(runs[-1].seconds)} -> {', '.join(d.codes) or 'no findings'}",
                      file=sys.stderr, flush=True)
    finally:
        if bar is not None:
            bar.close()
    return runs


def _secs(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

_IMG = re.compile(r"<img\s+alt='([^']*)'\s+src='data:image/png;base64,([A-Za-z0-9+/=]+)'>")


def _fragment(d: Diagnosis) -> tuple[str, dict[str, str], str]:
    """The body of the diagnosis layer's own HTML page (headings demoted), its images by alt
    text, and its style sheet -- so the demo shows exactly what ``lossdiag diagnose --format
    html`` shows, without a second report engine."""
    page = d.to_html()
    m = re.search(r"<body[^>]*>(.*)</body>", page, re.S)
    body = m.group(1) if m else page
    style = "".join(re.findall(r"<style>(.*?)</style>", page, re.S))
    body = re.sub(r"<h1>.*?</h1>\s*(<p>[^<]*</p>)?", "", body, count=1, flags=re.S)
    body = re.sub(r"<(/?)h3>", r"<\1h4>", body)
    body = re.sub(r"<(/?)h2>", r"<\1h4>", body)
    images = {alt or f"image{i}": b64 for i, (alt, b64) in enumerate(_IMG.findall(body))}
    return body, images, style


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:64em;
 margin:1.5em auto;padding:0 1em;line-height:1.45;color:#222}
h1{margin-bottom:.2em} h2{margin-top:2.2em;border-bottom:2px solid #ddd;padding-bottom:.2em}
table.sum{border-collapse:collapse;font-size:92%;width:100%}
table.sum td,table.sum th{border:1px solid #ddd;padding:4px 8px;text-align:left;
 vertical-align:top}
table.sum th{background:#f2f2f2}
.ok{color:#2a7d2a;font-weight:bold} .miss{color:#d62728;font-weight:bold}
.code{font-family:monospace;background:#eee;padding:0 4px;border-radius:3px;
 white-space:nowrap;display:inline-block;margin:1px 0}
.blurb{font-style:italic;color:#444} .meta{color:#666;font-size:90%}
nav a{margin-right:.8em}
.grid2{display:flex;flex-wrap:wrap;gap:1em} .grid2 figure{margin:0;flex:1 1 28em}
figcaption{font-size:90%;color:#555}
"""


def _summary_rows(runs: Sequence[_Run]) -> str:
    e = html.escape
    rows = []
    for r in runs:
        codes = " ".join(f"<span class='code'>{e(c)}</span>" for c in r.codes) or "none"
        if r.expected:
            status = ("<span class='ok'>found</span>" if not r.missed else
                      "<span class='miss'>missed " + e(", ".join(r.missed)) + "</span>")
        else:
            status = ("<span class='ok'>clean</span>" if not r.codes else
                      "<span class='miss'>false alarm?</span>")
        planted = ", ".join(r.expected) or "nothing (healthy)"
        rows.append(f"<tr><td><a href='#{e(r.name)}'>{e(r.name)}</a></td><td>{e(planted)}</td>"
                    f"<td>{codes}</td><td>{status}</td><td>{e(r.top_recommendation())}</td></tr>")
    return ("<table class='sum'><tr><th>scenario</th><th>planted</th><th>findings</th>"
            "<th></th><th>top recommendation</th></tr>" + "".join(rows) + "</table>")


def _write_report(out: Path, runs: Sequence[_Run], surf: Landscape,
                  land_imgs: dict[str, str], *, quick: bool, seed: int, seconds: float,
                  style: str) -> Path:
    import lossdiag

    e = html.escape
    info = lossdiag.info()
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             "<title>lossdiag demo report</title>",
             f"<style>{style}{_CSS}</style></head><body>",
             "<h1>lossdiag demo</h1>",
             f"<p class='meta'>lossdiag {e(str(info['version']))}, {e(str(info['simd']))}, "
             f"{info['threads']} threads; seed {seed}{', quick' if quick else ''}; "
             f"{len(runs)} training runs in {_secs(seconds)}.</p>",
             "<p>Small real models were trained in situations with a known, planted cause. "
             "Every run was diagnosed by <code>lossdiag.diagnose</code> from its history "
             "alone (the curves and the per-epoch validation statistics from "
             "<code>lossdiag.Metrics</code>); the table shows what it found.</p>",
             "<nav>" + "".join(f"<a href='#{e(r.name)}'>{e(r.name)}</a>" for r in runs)
             + "<a href='#landscape'>loss landscape</a></nav>",
             _summary_rows(runs)]
    for r in runs:
        meta = r.history.meta
        model = {"mlp": "MLP classifier", "seg": "per-pixel segmentation"}.get(
            str(meta.get("model")), str(meta.get("model")))
        parts.append(f"<h2 id='{e(r.name)}'>{e(r.name)}</h2>")
        parts.append(f"<p class='blurb'>{e(r.blurb)}</p>")
        parts.append(f"<p class='meta'>{e(model)}; planted: {e(str(meta.get('description')))}"
                     f"; {len(r.history)} epochs, {meta.get('n_train')} training "
                     f"{'images' if meta.get('model') == 'seg' else 'samples'}, batch "
                     f"{meta.get('batch_size')}; trained and diagnosed in {_secs(r.seconds)}.</p>")
        parts.append(r.fragment)
    # the landscape
    s = surf
    lmin = float(np.min(s.loss))
    parts.append("<h2 id='landscape'>Loss landscape of a two-weight logistic regression</h2>")
    parts.append(
        "<p>With only two weights the whole loss landscape can be drawn: every point of the "
        f"{len(s.x)}&times;{len(s.y)} grid is the exact mean binary cross-entropy over all "
        f"{s.meta.get('samples')} samples, computed by the compiled core in one batched call "
        f"({_secs(s.seconds)}). The red line is plain gradient descent "
        f"(learning rate {s.meta.get('lr')}, {s.meta.get('steps')} steps) from a poor start: "
        "the second feature has 2.5&times; the scale of the first, so the valley is long and "
        "narrow; the path drops into it quickly and then crawls along its floor "
        f"&mdash; the loss goes from {s.path_loss[0]:.3f} to {s.path_loss[-1]:.3f} "
        f"(grid minimum {lmin:.3f}). That crawl is the slow, almost straight tail of a loss "
        "curve.</p>")
    parts.append("<div class='grid2'>")
    for key, cap in (("contour", "Filled contours (log-spaced levels) with the trajectory."),
                     ("surface", "The same surface in 3-D."),
                     ("interpolation", "Loss on the straight line from the start (A) to the "
                                       "end (B) of the trajectory, extended 25% each side."),
                     ("curve", "Training loss of the trajectory per step.")):
        if key in land_imgs:
            parts.append(f"<figure><img alt='{key}' src='data:image/png;base64,"
                         f"{land_imgs[key]}'><figcaption>{e(cap)}</figcaption></figure>")
    parts.append("</div>")
    parts.append("<p class='meta'>Made with <code>lossdiag.landscape.logistic_surface</code>, "
                 "<code>Landscape.with_path</code>, <code>Landscape.plot</code> and "
                 "<code>lossdiag.landscape.interpolate</code>. PNG files of every figure are "
                 "next to this page.</p>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _landscape_figures(surf: Landscape, line: Landscape, out: Path) -> dict[str, str]:
    from matplotlib.figure import Figure

    imgs: dict[str, str] = {}
    figs = {
        "contour": surf.plot("contourf", title="BCE loss surface and gradient-descent path"),
        "surface": surf.plot("surface", title="BCE loss surface (3-D)"),
        "interpolation": line.plot(title="loss from start (A) to end (B)", figsize=(6.4, 3.6)),
    }
    assert surf.path_loss is not None
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(np.arange(len(surf.path_loss)), surf.path_loss, lw=1.6)
    ax.set_xlabel("gradient-descent step")
    ax.set_ylabel("training loss (BCE)")
    ax.set_title("loss along the trajectory", fontsize=10)
    ax.grid(alpha=0.3)
    figs["curve"] = fig
    for key, f in figs.items():
        f.savefig(out / f"landscape_{key}.png", dpi=90)
        imgs[key] = base64.b64encode((out / f"landscape_{key}.png").read_bytes()).decode()
    # a contour-line version too (the trajectory over plain contour lines)
    surf.savefig(out / "landscape_contour_lines.png", "contour", dpi=90,
                 title="BCE loss contours and gradient-descent path")
    return imgs


def _table(runs: Sequence[_Run], width: int = 110) -> str:
    """scenario -> findings -> top recommendation, the last column wrapped to ``width``."""
    import textwrap

    rows = [("scenario", "findings", "top recommendation")]
    for r in runs:
        codes = ", ".join(r.codes) or "(none)"
        if r.missed:
            codes += f"  [MISSED {', '.join(r.missed)}]"
        elif not r.expected and r.codes:
            codes += "  [healthy run: false alarm?]"
        rows.append((r.name, codes, r.top_recommendation()))
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    w2 = max(30, width - w0 - w1 - 4)
    lines = []
    for i, (a, b, c) in enumerate(rows):
        wrapped = textwrap.wrap(c, w2, break_long_words=False) or [""]
        lines.append(f"{a:<{w0}}  {b:<{w1}}  {wrapped[0]}")
        lines += [f"{'':<{w0}}  {'':<{w1}}  {more}" for more in wrapped[1:]]
        if i == 0:
            lines.append(f"{'-' * w0}  {'-' * w1}  {'-' * min(w2, 40)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``lossdiag demo`` with parsed arguments; returns the exit status (0 on success)."""
    t_start = time.perf_counter()
    quick = bool(getattr(args, "quick", False))
    seed = int(getattr(args, "seed", 0) or 0)
    progress = bool(getattr(args, "progress", True))
    out = Path(getattr(args, "out", None) or "lossdiag-demo")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"lossdiag demo: error: cannot create --out {out}: {exc}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; figures are only saved

    print(f"lossdiag demo: training {len(DEMO_SCENARIOS)} small models"
          f"{' (quick)' if quick else ''} ...", file=sys.stderr)
    runs = _train_all(DEMO_SCENARIOS, quick=quick, seed=seed, progress=progress)
    t_train = time.perf_counter() - t_start
    print(file=sys.stderr)
    print(_table(runs))
    print()
    sys.stdout.flush()

    style = ""
    diag_json = {}
    for r in runs:
        r.fragment, r.images, st = _fragment(r.diagnosis)
        style = style or st
        for alt, b64 in r.images.items():
            (out / f"{r.name}_{alt}.png").write_bytes(base64.b64decode(b64))
        diag_json[r.name] = r.diagnosis.to_dict()
    (out / "diagnoses.json").write_text(json.dumps(diag_json, indent=1, allow_nan=False),
                                        encoding="utf-8")

    print(f"lossdiag demo: drawing the figures and the loss landscape into {out} ...",
          file=sys.stderr, flush=True)
    surf, line = logistic_example(quick=quick, seed=seed)
    land_imgs = _landscape_figures(surf, line, out)
    report = _write_report(out, runs, surf, land_imgs, quick=quick, seed=seed,
                           seconds=t_train, style=style)
    missed = [f"{r.name}: {', '.join(r.missed)}" for r in runs if r.missed]
    if missed:
        print("note: planted findings not reported: " + "; ".join(missed), file=sys.stderr)
    total = time.perf_counter() - t_start
    print(f"wrote {report} (and {len(list(out.glob('*.png')))} PNG files) in {total:.1f} s "
          f"(training and diagnosis {t_train:.1f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="lossdiag")
    add_parser(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["demo", *sys.argv[1:]])
    sys.exit(ns.func(ns))
