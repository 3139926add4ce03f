"""Findings, the Diagnosis that holds them, and its text / JSON / HTML / matplotlib renderings.

JSON schema (``Diagnosis.to_json()``, ``"schema": "lossdiag.diagnosis/1"``)::

    {"schema": "lossdiag.diagnosis/1",
     "summary": {"source", "unit", "points", "loss", "score", "num_classes", "chance_level",
                 "prior_entropy", "has_statistics", "worst_severity", "counts": {sev: n}},
     "findings": [{"code", "severity", "title", "cause", "start", "end", "unit", "series",
                   "evidence": {name: number | string | list}, "explanation",
                   "recommendations": [{"rank", "action", "magnitude", "why"}]}],
     "skipped": [{"code", "reason"}],
     "notes": [str]}

Non-finite numbers in evidence are written as the strings ``"nan"``, ``"inf"``, ``"-inf"`` so
the output is strict JSON.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._stats import fmt

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ._stats import RunView

__all__ = ["CODES", "SEVERITIES", "Diagnosis", "Finding", "Recommendation", "Skipped"]

SCHEMA = "lossdiag.diagnosis/1"
SEVERITIES = ("info", "warning", "error")
CODES = ("non-finite", "diverging", "stuck", "overfitting", "overconfident",
         "loss-accuracy-decoupling", "slow-tail", "oscillating", "class-imbalance")
_SEV_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_COLORS = {"error": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}


@dataclass(frozen=True)
class Recommendation:
    """One ranked remedy: what to do, how much (``magnitude``), and why."""

    action: str
    magnitude: str = ""
    why: str = ""

    def to_dict(self, rank: int) -> dict[str, Any]:
        return {"rank": rank, "action": self.action, "magnitude": self.magnitude,
                "why": self.why}


@dataclass
class Finding:
    """One recognised problem with its evidence, explanation and ranked recommendations."""

    code: str
    severity: str
    title: str
    start: float
    end: float
    explanation: str
    evidence: dict[str, Any] = field(default_factory=dict)
    recommendations: list[Recommendation] = field(default_factory=list)
    cause: str | None = None
    unit: str = "epoch"
    series: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"code must be one of {CODES}, got {self.code!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "title": self.title,
                "cause": self.cause, "start": _num(self.start), "end": _num(self.end),
                "unit": self.unit, "series": list(self.series),
                "evidence": {k: _jsonable(v) for k, v in self.evidence.items()},
                "explanation": self.explanation,
                "recommendations": [r.to_dict(i + 1) for i, r in enumerate(self.recommendations)]}

    def span_text(self) -> str:
        u = self.unit
        if self.start == self.end:
            return f"{u} {fmt_x(self.start)}"
        return f"{u}s {fmt_x(self.start)}-{fmt_x(self.end)}"

    def __str__(self) -> str:
        lines = [f"[{self.severity.upper()}] {self.code}: {self.title} ({self.span_text()})"]
        lines += _wrap(self.explanation, "    ")
        if self.evidence:
            lines.append("    evidence: " + ", ".join(
                f"{k}={_evidence_text(v)}" for k, v in self.evidence.items()))
        for i, r in enumerate(self.recommendations, 1):
            mag = f" [{r.magnitude}]" if r.magnitude else ""
            lines += _wrap(f"{i}. {r.action}{mag}" + (f" - {r.why}" if r.why else ""),
                           "    ", "       ")
        return "\n".join(lines)


@dataclass(frozen=True)
class Skipped:
    """A check that could not run, and why."""

    code: str
    reason: str


class Diagnosis:
    """The result of :func:`lossdiag.diagnose`: findings, skipped checks and notes.

    ``str(d)`` is a readable report; ``d.to_json()`` a stable JSON document; ``d.to_html(path)``
    a self-contained page with annotated curves; ``d.plot()`` a matplotlib Figure.
    """

    def __init__(self, findings: Sequence[Finding], skipped: Sequence[Skipped],
                 notes: Sequence[str], summary: Mapping[str, Any],
                 view: RunView | None = None) -> None:
        self.findings: list[Finding] = sorted(
            findings, key=lambda f: (-_SEV_RANK[f.severity], f.start, CODES.index(f.code)))
        self.skipped: list[Skipped] = list(skipped)
        self.notes: list[str] = list(notes)
        self.summary: dict[str, Any] = dict(summary)
        self._view = view

    # ------------------------------------------------------------------ queries
    @property
    def codes(self) -> list[str]:
        """Codes of the findings, most severe first."""
        return [f.code for f in self.findings]

    def get(self, code: str) -> Finding | None:
        """The first finding with ``code`` (None if absent)."""
        return next((f for f in self.findings if f.code == code), None)

    def __contains__(self, code: object) -> bool:
        return any(f.code == code for f in self.findings)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    @property
    def insufficient(self) -> str | None:
        """Why nothing could be judged (no loss curve, too few points), or None."""
        return self.summary.get("insufficient")

    @property
    def worst_severity(self) -> str | None:
        return self.findings[0].severity if self.findings else None

    def at_least(self, severity: str) -> list[Finding]:
        """Findings at or above ``severity`` (info < warning < error)."""
        if severity not in _SEV_RANK:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
        return [f for f in self.findings if _SEV_RANK[f.severity] >= _SEV_RANK[severity]]

    def __repr__(self) -> str:
        return f"<Diagnosis {self.codes or 'no findings'}; {len(self.skipped)} skipped>"

    # ------------------------------------------------------------------ text
    def __str__(self) -> str:
        s = self.summary
        head = f"lossdiag diagnosis of {s.get('source') or 'a training history'}"
        lines = [head, "=" * min(len(head), 100)]
        desc = [f"{s.get('points')} {s.get('unit')}s"]
        if s.get("loss"):
            desc.append(f"loss '{s['loss']}'")
        if s.get("score"):
            desc.append(f"score '{s['score']}'")
        if s.get("num_classes"):
            desc.append(f"{s['num_classes']} classes (chance level ln C = "
                        f"{fmt(s['chance_level'])})")
        if s.get("has_statistics"):
            desc.append("validation statistics present")
        lines.append("Read: " + ", ".join(desc) + ".")
        if not self.findings and self.insufficient:
            lines.append("")
            lines += _wrap("Too little to judge: " + self.insufficient + ".", "")
        elif not self.findings:
            lines.append("")
            lines.append("No problems found: the curves look like a healthy run.")
        else:
            counts = s.get("counts", {})
            lines.append("Found: " + ", ".join(_plural(counts[k], k) for k in
                                               reversed(SEVERITIES) if counts.get(k)) + ".")
            for f in self.findings:
                lines.append("")
                lines.append(str(f))
        if self.skipped:
            lines.append("")
            lines.append("Checks not run:")
            for sk in self.skipped:
                lines += _wrap(f"- {sk.code}: {sk.reason}", "  ", "    ")
        if self.notes:
            lines.append("")
            lines.append("Notes:")
            for n in self.notes:
                lines += _wrap(f"- {n}", "  ", "    ")
        return "\n".join(lines)

    # ------------------------------------------------------------------ json
    def to_dict(self) -> dict[str, Any]:
        summary = {k: _jsonable(v) for k, v in self.summary.items()}
        summary["worst_severity"] = self.worst_severity
        return {"schema": SCHEMA, "summary": summary,
                "findings": [f.to_dict() for f in self.findings],
                "skipped": [{"code": s.code, "reason": s.reason} for s in self.skipped],
                "notes": list(self.notes)}

    def to_json(self, path: str | Path | None = None, *, indent: int | None = 2) -> str:
        """Strict JSON text of :meth:`to_dict` (also written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    # ------------------------------------------------------------------ plots
    def plot(self, *, figsize: tuple[float, float] | None = None) -> Figure:
        """Loss and score curves with each finding's span shaded; returns the Figure."""
        from matplotlib.figure import Figure

        view = self._view
        has_score = view is not None and (view.train_score is not None
                                          or view.val_score is not None)
        nrows = 2 if has_score else 1
        fig = Figure(figsize=figsize or (9.0, 3.2 * nrows + 0.4), layout="constrained")
        axes = fig.subplots(nrows, 1, sharex=True, squeeze=False)[:, 0]
        if view is None:
            axes[0].text(0.5, 0.5, "no curves", ha="center", transform=axes[0].transAxes)
            return fig
        ax = axes[0]
        drawn = False
        loss_vals: list[np.ndarray] = []
        for s, style in ((view.train_loss, "-"), (view.val_loss, "--")):
            if s is not None and len(s):
                ax.plot(s.x, s.y, style, label=s.key, lw=1.4)
                loss_vals.append(s.y)
                drawn = True
        log_scale = False
        top = None
        if drawn:
            allv = np.concatenate(loss_vals)
            pos_all = allv[allv > 0]
            if pos_all.size and pos_all.max() / max(pos_all.min(), 1e-300) > 50:
                ax.set_yscale("log")
                log_scale = True
            top = float(np.max(allv)) if allv.size else None
        # reference levels: drawn where they fall inside (or just above) the curves' range,
        # named in a corner note otherwise, so they never squash the curves to the bottom
        off_plot = []
        refs = []
        if view.chance is not None:
            refs.append((view.chance, "gray", "ln C (chance)"))
        if view.prior_entropy is not None and view.chance is not None and \
                view.prior_entropy < 0.97 * view.chance:
            refs.append((view.prior_entropy, "purple", "prior entropy"))
        for level, color, label in refs:
            if top is None or log_scale or level <= 1.25 * top:
                ax.axhline(level, color=color, lw=0.8, ls=":", label=label)
            else:
                off_plot.append(f"{label} = {fmt(level)}")
        if off_plot:
            ax.text(0.99, 0.97, "above the plot: " + ", ".join(off_plot), ha="right", va="top",
                    transform=ax.transAxes, fontsize=7, color="gray")
        ax.set_ylabel(view.loss_name or "loss")
        if has_score:
            ax2 = axes[1]
            score_vals = []
            for s, style in ((view.train_score, "-"), (view.val_score, "--")):
                if s is not None and len(s):
                    ax2.plot(s.x, s.y, style, label=s.key, lw=1.4)
                    score_vals.append(s.y)
            lf = view.label_freq
            if view.majority_rate is not None and lf is not None and lf.min() > 0 and \
                    lf.max() / lf.min() >= view.th.imbalance_ratio:
                ax2.axhline(view.majority_rate, color="purple", lw=0.8, ls=":",
                            label="majority-class rate")
            if score_vals:
                sv = np.concatenate(score_vals)
                lo, hi = float(np.min(sv)), float(np.max(sv))
                pad = max(0.02 * (hi - lo), 0.005)
                if hi <= 1.0 + 1e-9:
                    # points at 1.0 stay visible above the frame line
                    ax2.set_ylim(lo - pad, max(hi, 1.0 if hi > 0.98 else hi) + pad)
            ax2.set_ylabel(view.score_name or "score")
            ax2.legend(loc="best", fontsize=8)
        for a in axes:
            for i, f in enumerate(self.findings):
                lo, hi = f.start, f.end
                if hi <= lo:
                    hi = lo + 0.5
                    lo = lo - 0.5
                a.axvspan(lo, hi, color=_COLORS[f.severity], alpha=0.12)
                if a is axes[0]:
                    a.text(lo, 0.99 - 0.09 * (i % 5), f" {f.code}",
                           transform=a.get_xaxis_transform(), fontsize=8,
                           color=_COLORS[f.severity], va="top",
                           bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none",
                                 "pad": 1.0})
        ax.legend(loc="best", fontsize=8)
        axes[-1].set_xlabel(view.unit)
        from matplotlib.ticker import MaxNLocator

        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        fig.suptitle(self.summary.get("source") or "training history", fontsize=10)
        return fig

    def _stats_figure(self) -> Figure | None:
        """Confidence histogram and reliability diagram of the last epoch with statistics."""
        view = self._view
        if view is None or not view.stats:
            return None
        x, st = view.stats[-1]
        rel = st.get("reliability")
        conf = st.get("conf_hist")
        tp = st.get("true_prob_hist")
        if rel is None and conf is None and tp is None:
            return None
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9.0, 3.2), layout="constrained")
        a1, a2 = fig.subplots(1, 2)
        edges = np.asarray(st.get("bin_edges", np.linspace(0, 1, 21)), dtype=float)
        centers = (edges[:-1] + edges[1:]) / 2
        width = float(edges[1] - edges[0]) if len(edges) > 1 else 0.05
        if tp is not None:
            tpa = np.asarray(tp, dtype=float)
            a1.bar(centers[: len(tpa)], tpa / max(tpa.sum(), 1), width=width, alpha=0.6,
                   label="true-class probability")
        if conf is not None:
            ca = np.asarray(conf, dtype=float)
            a1.step(edges[: len(ca) + 1], np.append(ca / max(ca.sum(), 1), 0), where="post",
                    color="k", lw=1, label="confidence (max prob.)")
        a1.axvline(1 / math.e, color="gray", ls=":", lw=0.8, label="1/e")
        a1.set_xlabel("probability")
        a1.set_ylabel("share")
        a1.legend(fontsize=7)
        a1.set_title(f"validation, {view.unit} {fmt_x(x)}", fontsize=9)
        if rel is not None:
            c = np.asarray(rel.get("confidence"), dtype=float)
            acc = np.asarray(rel.get("accuracy"), dtype=float)
            cnt = np.asarray(rel.get("count", np.ones_like(c)), dtype=float)
            ok = np.isfinite(c) & np.isfinite(acc) & (cnt > 0)
            # a bin holding a handful of samples has an accuracy of 0 or 1 by chance: draw it
            # hollow and keep it out of the line, so the diagram shows what is measured
            total = float(cnt[ok].sum()) if ok.any() else 0.0
            dense = ok & (cnt >= max(10.0, 0.01 * total))
            sparse = ok & ~dense
            a2.plot([0, 1], [0, 1], color="gray", lw=0.8, ls=":")
            if dense.any():
                sizes = 8 + 60 * np.sqrt(cnt[dense] / max(cnt[dense].max(), 1.0))
                a2.plot(c[dense], acc[dense], "-", color="C0", lw=1)
                a2.scatter(c[dense], acc[dense], s=sizes, color="C0", zorder=3,
                           label="bin (area ~ samples)")
            if sparse.any():
                a2.scatter(c[sparse], acc[sparse], s=12, facecolors="none", edgecolors="C0",
                           zorder=3, label=f"sparse bin (< {int(max(10.0, 0.01 * total))} "
                                           "samples)")
            ece = st.get("ece")
            a2.set_title(f"reliability (ECE {fmt(float(ece))})" if ece is not None
                         else "reliability", fontsize=9)
            a2.set_xlabel("confidence")
            a2.set_ylabel("accuracy")
            a2.set_xlim(-0.02, 1.02)
            a2.set_ylim(-0.02, 1.02)
            if dense.any() or sparse.any():
                a2.legend(fontsize=7, loc="upper left")
        return fig

    def to_html(self, path: str | Path | None = None) -> str:
        """Self-contained HTML report (images embedded as base64 PNG; no external URLs).

        Returns the HTML text and writes it to ``path`` when given.
        """
        imgs = [_fig_png(self.plot())]
        sf = self._stats_figure()
        if sf is not None:
            imgs.append(_fig_png(sf))
        e = html.escape
        s = self.summary
        parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
                 f"<title>lossdiag: {e(str(s.get('source') or 'diagnosis'))}</title>",
                 "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;"
                 "line-height:1.45;color:#222}.f{border-left:6px solid #999;padding:.3em 1em;"
                 "margin:1em 0;background:#fafafa}.error{border-color:#d62728}"
                 ".warning{border-color:#ff7f0e}.info{border-color:#1f77b4}"
                 "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ddd;"
                 "padding:2px 6px;text-align:left}code{background:#eee;padding:0 3px}"
                 "img{max-width:100%}</style></head><body>",
                 f"<h1>lossdiag diagnosis</h1><p>{e(str(s.get('source') or ''))}</p>"]
        parts.append(f"<p><img alt='curves' src='data:image/png;base64,{imgs[0]}'></p>")
        if not self.findings:
            parts.append("<p><b>No problems found</b>: the curves look like a healthy run.</p>")
        for f in self.findings:
            parts.append(f"<div class='f {f.severity}'><h3>{e(f.severity.upper())}: "
                         f"<code>{e(f.code)}</code> {e(f.title)}</h3>")
            parts.append(f"<p><i>{e(f.span_text())}"
                         + (f", cause: <code>{e(f.cause)}</code>" if f.cause else "")
                         + f"</i></p><p>{e(f.explanation)}</p>")
            if f.evidence:
                parts.append("<table><tr><th>evidence</th><th>value</th></tr>" + "".join(
                    f"<tr><td>{e(k)}</td><td>{e(_evidence_text(v))}</td></tr>"
                    for k, v in f.evidence.items()) + "</table>")
            if f.recommendations:
                parts.append("<ol>" + "".join(
                    f"<li><b>{e(r.action)}</b>"
                    + (f" <i>({e(r.magnitude)})</i>" if r.magnitude else "")
                    + (f" - {e(r.why)}" if r.why else "") + "</li>"
                    for r in f.recommendations) + "</ol>")
            parts.append("</div>")
        if len(imgs) > 1:
            parts.append("<h2>Validation statistics</h2>"
                         f"<p><img alt='statistics' src='data:image/png;base64,{imgs[1]}'></p>")
        if self.skipped:
            parts.append("<h2>Checks not run</h2><ul>" + "".join(
                f"<li><code>{e(k.code)}</code>: {e(k.reason)}</li>" for k in self.skipped)
                + "</ul>")
        if self.notes:
            parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in self.notes)
                         + "</ul>")
        parts.append("</body></html>")
        text = "\n".join(parts)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def fmt_x(x: float) -> str:
    """Epoch/step label: integers without decimals."""
    xf = float(x)
    return str(int(xf)) if xf.is_integer() else f"{xf:.3g}"


def _num(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return int(f) if f.is_integer() and abs(f) < 2**53 else f
    return v


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return _num(f)
        return float(f"{f:.6g}")
    if v is None or isinstance(v, str):
        return v
    return str(v)


def _evidence_text(v: Any) -> str:
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_evidence_text(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_evidence_text(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return fmt(float(v), 4)
    return str(v)


def _plural(n: int, word: str) -> str:
    """``2 warnings``, ``1 error``, ``3 info findings``."""
    if word == "info":
        return f"{n} info finding" + ("s" if n != 1 else "")
    return f"{n} {word}" + ("s" if n != 1 else "")


def _wrap(text: str, indent: str, cont: str | None = None, width: int = 98) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent,
                         subsequent_indent=cont if cont is not None else indent,
                         break_long_words=False, break_on_hyphens=False) or [indent]


def _fig_png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")
