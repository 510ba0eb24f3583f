"""Figures of the analysis (matplotlib is imported inside each function, never at import time).

Every function returns a `matplotlib.figure.Figure` built with the object-oriented API (no
pyplot, no global backend change), so it works headless: ``fig.savefig("x.png")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "plot_convergence",
    "plot_guidance",
    "plot_local_errors",
    "plot_stability_regions",
    "plot_trajectories",
    "save",
    "small_multiples",
    "svg",
]


def _figure(figsize=(6.0, 4.2)):
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - an optional dependency
        raise ImportError("plotting needs matplotlib: pip install 'odesolve[plot]'") from err
    return Figure(figsize=figsize, layout="constrained")


def save(fig, path, dpi: int = 100) -> str:
    """Write ``fig`` to ``path`` (PNG unless the suffix says otherwise); returns the path."""
    fig.savefig(str(path), dpi=dpi)
    return str(path)


def svg(fig) -> str:
    """``fig`` as an inline SVG string (text kept as text, no XML header), ready to print into an HTML page.

    The docs print it from a ``python exec="on" html="true"`` block, so that each lesson's figure is drawn
    by the lesson's own code when the site is built.
    """
    import io

    from matplotlib import rc_context

    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def plot_convergence(results: Sequence, title: str | None = None, slopes: Sequence[int] = (1, 2, 3, 4), *, ax=None):
    """Error against NFE (log-log) for [`ConvergenceResult`][odesolve.analysis.convergence.ConvergenceResult]s,
    with the fitted points circled and reference slopes. With ``ax``, draws into that axis (a panel of
    [`small_multiples`][odesolve.analysis.plots.small_multiples]) and returns its figure."""
    fig = _figure() if ax is None else ax.figure
    ax = fig.add_subplot() if ax is None else ax
    for r in results:
        nfe, err = np.array(r.nfe, dtype=float), np.array(r.errors)
        (line,) = ax.loglog(nfe, err, "o-", ms=3, lw=1, label=f"{r.method} ({r.slope:.2f})")
        used = list(r.used)
        ax.loglog(nfe[used], err[used], "o", ms=6, mfc="none", color=line.get_color())
    if results:
        nfe = np.array(results[0].nfe, dtype=float)
        top = max(max(r.errors) for r in results)
        for p in slopes:
            ax.loglog(nfe, top * (nfe / nfe[0]) ** -p, ":", color="0.6", lw=0.8)
            ax.annotate(f"p={p}", (nfe[-1], top * (nfe[-1] / nfe[0]) ** -p), fontsize=7, color="0.4")
    ax.set_xlabel("NFE")
    ax.set_ylabel("RMS error at the end")
    ax.set_title(_wrap(title or "error against model calls (fitted points circled)"), fontsize=9)
    ax.legend(fontsize=6, ncol=1 if len(results) <= 6 else 2)
    return fig


def small_multiples(titles: Sequence[str], ncols: int = 3, panel=(3.4, 2.8), title: str | None = None):
    """A figure with one log-log panel per title (shared axes, ``ncols`` across) and an optional overall
    title; returns ``(fig, axes)`` with one axis per title, the unused panels removed."""
    n = len(titles)
    if n < 1:
        raise ValueError("titles must name at least one panel")
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    fig = _figure((panel[0] * ncols, panel[1] * nrows + (0.4 if title else 0.0)))
    grid = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    axes = list(grid.flat)
    for ax in axes[n:]:
        ax.remove()
    for ax, t in zip(axes, titles):
        ax.set_title(_wrap(t, 40), fontsize=9)
    if title:
        fig.suptitle(_wrap(title, 30 * ncols), fontsize=10)
    return fig, axes[:n]


def _wrap(text: str, width: int = 60) -> str:
    """``text`` broken into lines of at most ``width`` characters: titles are never cut off."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def plot_stability_regions(
    methods: Sequence,
    h: float,
    test: str = "lambda",
    *,
    re=(-6.0, 1.0),
    im=(-4.0, 4.0),
    n=(241, 161),
    locus: bool = False,
    title: str | None = None,
):
    """Stability regions (spectral radius <= 1 of an interior step on a uniform grid, step ``h``) of
    several methods in the complex ``mu`` plane, as outlines; the first one filled. With ``locus``
    also the boundary-locus curves."""
    from .stability import boundary_locus, stability_region

    fig = _figure((6.0, 5.0))
    ax = fig.add_subplot()
    for i, m in enumerate(methods):
        reg = stability_region(m, h, test, re=re, im=im, n=n)
        color = f"C{i}"
        if i == 0:
            ax.contourf(reg.re, reg.im, reg.stable.astype(float), levels=[0.5, 1.5], colors=[color], alpha=0.15)
        cs = ax.contour(reg.re, reg.im, reg.radius, levels=[1.0], colors=[color], linewidths=1.2)
        ax.plot([], [], color=color, label=str(getattr(m, "name", m)))
        if locus:
            loc = boundary_locus(m, h, test).ravel()
            loc = loc[np.isfinite(loc)]
            ax.plot(loc.real, loc.imag, ".", ms=0.6, color=color)
        del cs
    ax.axhline(0, color="0.7", lw=0.5)
    ax.axvline(0, color="0.7", lw=0.5)
    ax.set_xlim(*re)
    ax.set_ylim(*im)
    ax.set_xlabel("Re mu")
    ax.set_ylabel("Im mu")
    ax.set_aspect("equal")
    ax.set_title(_wrap(title or f"stability regions, {test} test, h = {h:g}"), fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def plot_local_errors(profiles: Sequence, title: str | None = None):
    """Local truncation errors (solid) and their propagated contributions to the global error
    (dashed) per step, for [`LocalErrors`][odesolve.analysis.truncation.LocalErrors] profiles."""
    fig = _figure()
    ax = fig.add_subplot()
    for i, p in enumerate(profiles):
        n = np.arange(len(p.local))
        ax.semilogy(n, p.local, "o-", ms=3, color=f"C{i}", label=f"{p.method}: local (global {p.global_error:.1e})")
        if p.fan is not None:
            ax.semilogy(n, p.fan, "s--", ms=3, color=f"C{i}", alpha=0.7, label=f"{p.method}: carried to the end")
    ax.set_xlabel("step n")
    ax.set_ylabel("RMS error")
    ax.set_title(_wrap(title or "local truncation errors (exact history) and what reaches the end"), fontsize=9)
    ax.legend(fontsize=6)
    return fig


def plot_trajectories(
    method, problem="gmm2d", grid=None, steps: int = 10, n_show: int = 24, title: str | None = None, points: int = 40
):
    """2-D sample paths of ``method`` (markers at its steps) against the exact flow (lines) on a 2-D
    problem, over the data distribution's samples."""
    import torch

    from ..execute import execute
    from . import families as _families
    from ._plan import as_method
    from .problems import as_ivp

    P = as_ivp(problem)
    if P.x.ndim != 2 or P.x.shape[1] != 2:
        raise ValueError(f"plot_trajectories needs a 2-D problem, got states of shape {tuple(P.x.shape)}")
    m = as_method(method)
    if grid is None:
        grid = _families.Family("karras", path=P.path, sigma_start=P.sigma_start, sigma_end=max(P.sigma_end, 1e-3))(
            steps
        )
    plan = m.compile(grid.path, grid)
    x = P.x[:n_show]
    _, traj = execute(plan, P.model(plan.prediction), x, return_trajectory=True)
    fine = torch.exp(
        torch.linspace(float(torch.log(grid.sigmas[0])), float(torch.log(grid.sigmas[-1])), points, dtype=torch.float64)
    )
    ts = P.path.t_of_noise_level(fine)
    ref = P.trajectory(x, ts).numpy()
    traj = traj.numpy()
    fig = _figure((5.5, 5.0))
    ax = fig.add_subplot()
    dist = P.distribution
    if hasattr(dist, "sample"):
        data = dist.sample(2000, torch.Generator().manual_seed(0)).numpy()
        ax.plot(data[:, 0], data[:, 1], ".", ms=1, color="0.8", zorder=0)
    for i in range(x.shape[0]):
        ax.plot(ref[:, i, 0], ref[:, i, 1], "-", color="0.3", lw=0.7)
        ax.plot(traj[:, i, 0], traj[:, i, 1], "o-", ms=2, lw=0.6, color="C1")
    ax.plot([], [], "-", color="0.3", label="exact flow")
    ax.plot([], [], "o-", ms=2, color="C1", label=f"{m.name}, {grid.steps} steps")
    ax.set_aspect("equal")
    ax.set_title(_wrap(title or f"sample paths from sigma = {P.sigma_start:g}"), fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_guidance(results: Sequence, title: str | None = None):
    """mu_w per step (most negative direction) and the steps that are unstable, for
    [`GuidanceStability`][odesolve.analysis.stability.GuidanceStability] results."""
    fig = _figure((6.5, 4.2))
    ax = fig.add_subplot()
    for i, g in enumerate(results):
        n = np.arange(len(g.h))
        k = np.argmax(g.radius, axis=1)
        rad = g.radius[n, k]
        ax.semilogy(n, np.maximum(rad, 1e-3), "o-", ms=3, color=f"C{i}", label=f"{g.method}, w = {g.scale:g}")
        bad = rad > 1
        ax.semilogy(n[bad], rad[bad], "x", ms=8, color=f"C{i}")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_xlabel("step n")
    ax.set_ylabel("spectral radius of the step (max over directions)")
    ax.set_title(_wrap(title or "guided Gaussian: per-step amplification (x: unstable)"), fontsize=9)
    ax.legend(fontsize=7)
    return fig
