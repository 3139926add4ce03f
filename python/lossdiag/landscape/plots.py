"""Drawing a landscape: filled contours, contour lines with the trajectory, 3-D, 1-D."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

from ._common import (
    PLOT_KINDS,
    _check_choice,
)

if TYPE_CHECKING:
    from .surfaces import Landscape


def plot(land: Landscape, kind: str | None = None, *, ax: Axes | None = None, path: Any = None,
         levels: int = 30, log: bool | None = None, title: str | None = None,
         figsize: tuple[float, float] | None = None) -> Figure:
    """Draw the landscape; returns the matplotlib Figure.

    kind:
        ``"contourf"`` (filled contour, the default for 2-D), ``"contour"`` (contour lines
        with the trajectory drawn over them), ``"surface"`` (3-D surface) or ``"line"``
        (the default and only choice for 1-D landscapes).
    path:
        A training path to draw (defaults to the attached ``land.path``).
    log:
        Log-spaced contour levels / log y-axis; default: when the loss spans more than
        a factor 20 (contours) or 100 (curves).
    """
    from matplotlib.figure import Figure

    kind = kind or ("line" if land.y is None else "contourf")
    _check_choice(kind, "kind", PLOT_KINDS)
    if (kind == "line") != (land.y is None):
        raise ValueError(f"kind: {kind!r} does not fit a {land.ndim}-D landscape")
    p = land.path if path is None else np.asarray(path, dtype=np.float64)
    fin = land.loss[np.isfinite(land.loss)]
    lo = float(fin.min()) if fin.size else 0.0
    hi = float(fin.max()) if fin.size else 1.0
    if log is None:  # contours resolve valleys better on log levels; curves rarely need it
        log = lo > 0 and hi / lo > (100 if kind == "line" else 20)
    if ax is None:
        fig = Figure(figsize=figsize or ((7.0, 4.2) if kind == "line" else (6.4, 5.2)),
                     layout="constrained")
        if kind == "surface":
            # computed_zorder=False: the trajectory is drawn over the surface, not hidden
            ax = fig.add_subplot(projection="3d", computed_zorder=False)
        else:
            ax = fig.add_subplot()
    else:
        fig = ax.figure  # type: ignore[assignment]
    xl, yl = land.labels
    if kind == "line":
        ax.plot(land.x, land.loss, lw=1.6, label="loss")
        if log:
            ax.set_yscale("log")
        if p is not None:
            ax.plot(p, land.loss_at(p), "o", ms=4, color="C3", label="path")
        if land.kind == "interpolation":
            for a, lab in ((0.0, "A"), (1.0, "B")):
                if land.x[0] <= a <= land.x[-1]:
                    ax.axvline(a, color="gray", lw=0.8, ls=":")
                    ax.text(a, 1.0, f" {lab}", transform=ax.get_xaxis_transform(),
                            va="top", color="gray")
        if land.accuracy is not None:
            ax2 = ax.twinx()
            ax2.plot(land.x, land.accuracy, color="C2", lw=1.0, ls="--", label="accuracy")
            ax2.set_ylabel("accuracy")
            ax2.set_ylim(0, 1.02)
        ax.set_xlabel(xl)
        ax.set_ylabel("loss")
    else:
        assert land.y is not None
        X, Y = np.meshgrid(land.x, land.y)
        Z = np.where(np.isfinite(land.loss), land.loss, np.nan)
        lv = (np.geomspace(lo, hi, levels) if log else np.linspace(lo, hi, levels)) \
            if hi > lo else levels
        if kind == "surface":
            Zs = np.log10(Z) if log else Z
            ax.plot_surface(X, Y, Zs, cmap="viridis", linewidth=0,  # type: ignore[union-attr]
                            antialiased=True, rcount=min(80, len(land.y)),
                            ccount=min(80, len(land.x)), alpha=0.9, zorder=1)
            if p is not None:
                zp = land.loss_at(p[:, 0], p[:, 1])
                zp = np.log10(zp) if log else zp
                ax.plot(p[:, 0], p[:, 1], zp, color="#d62728", lw=2.2, zorder=5)
                ax.scatter([p[0, 0]], [p[0, 1]], [zp[0]], s=40, c="white",  # type: ignore[arg-type]
                           edgecolors="#d62728", zorder=6, depthshade=False)
                ax.scatter([p[-1, 0]], [p[-1, 1]], [zp[-1]], s=120, c="#d62728",  # type: ignore[arg-type]
                           marker="*", edgecolors="k", zorder=6, depthshade=False)
            ax.set_zlabel("log10 loss" if log else "loss")  # type: ignore[union-attr]
            ax.view_init(elev=35, azim=-60)  # type: ignore[union-attr]
        elif kind == "contourf":
            from matplotlib import colors

            norm = colors.LogNorm(lo, hi) if log and hi > lo else None
            cs = ax.contourf(X, Y, Z, levels=lv, cmap="viridis", norm=norm,
                             extend="neither")
            ax.contour(X, Y, Z, levels=lv, colors="k", linewidths=0.3, alpha=0.4)
            cb = fig.colorbar(cs, ax=ax, shrink=0.9)
            cb.set_label("loss")
            if log:
                _log_colorbar_ticks(cb, lo, hi)
        else:
            cs = ax.contour(X, Y, Z, levels=lv, cmap="viridis", linewidths=0.9)
            ax.clabel(cs, cs.levels[::4], inline=True, fontsize=7, fmt="%.3g")
        if kind != "surface":
            xm, ym, lm = land.minimum()
            ax.plot([xm], [ym], marker="X", color="white", mec="k", ms=10, mew=1.2,
                    ls="none", label=f"grid minimum ({lm:.3g})")
            if land.kind == "plane" and land.x[0] <= 0 <= land.x[-1] and \
                    land.y[0] <= 0 <= land.y[-1]:
                ax.plot([0.0], [0.0], marker="P", color="#ff7f0e", mec="k", ms=10,
                        ls="none", label="the model (origin)")
            if p is not None:
                ax.plot(p[:, 0], p[:, 1], "-", color="#d62728", lw=1.8, label="trajectory")
                ax.plot(p[:, 0], p[:, 1], "o", color="#d62728", ms=2.5)
                ax.plot(p[0, 0], p[0, 1], "o", color="#d62728", ms=8, mfc="white",
                        label="start")
                ax.plot(p[-1, 0], p[-1, 1], "*", color="#d62728", ms=14, mec="k",
                        label="end")
            ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
            ax.set_xlim(land.x[0], land.x[-1])
            ax.set_ylim(land.y[0], land.y[-1])
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
    ax.set_title(title if title is not None else default_title(land), fontsize=10)
    return fig



def default_title(land: Landscape) -> str:
    names = {"logistic": "logistic-regression loss (BCE)", "plane": "loss on a random plane",
             "trajectory": "loss on the PCA plane of the trajectory",
             "line": "loss along a random direction",
             "interpolation": "loss on the line from A to B"}
    t = names.get(land.kind, "loss landscape")
    if land.directions is not None and land.directions.seed is not None:
        t += f" (seed {land.directions.seed}, {land.directions.normalization} norm.)"
    return t



def _log_colorbar_ticks(cb: Any, lo: float, hi: float) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter

    ticks = np.geomspace(lo, hi, 6)
    cb.ax.yaxis.set_major_locator(FixedLocator(ticks))
    cb.ax.yaxis.set_minor_locator(FixedLocator([]))
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))


