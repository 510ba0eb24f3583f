"""``odesolve report``: every method's declared, derived and measured order, its error at a few NFE
and its stability interval, as one table, PNG figures and a Markdown report.

For each method:

- **declared**: ``method.order``;
- **derived**: [`numeric_order`][odesolve.analysis.numeric.numeric_order] (polynomial and linear test models
  pushed through the plan on a refinement family; random step ratios, or random smooth grids for
  equal-step tables), and **symbolic**: [`derive`][odesolve.analysis.symbolic.derive] where the table
  has a closed form;
- **measured**: the least-squares slope of error against NFE on the problem (Karras grids,
  sigma 1 -> 0.1, float64 states and exact model, DOP853 reference);
- **error @ NFE**: RMS error at the end on a practical Karras grid (sigma 80 -> 0) from exact samples
  of the noisy marginal;
- **mu* (h)**: the stability interval on the lambda test (most negative stable mu of an interior step,
  uniform lambda-grid with step h; DDIM: -2/(e^h - 1)).

The error and convergence figures are small multiples, one panel per method family
([`method_family`][odesolve.analysis.report.method_family]), on shared axes; a method that cannot fit an NFE budget
(fewer than two steps) has a dash in the tables and no point in the figures.

Use from Python with [`run_report`][odesolve.analysis.report.run_report], or from the command line (``odesolve report``,
`odesolve.commands.report`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath

import torch

from .. import grids as _grids
from .. import methods as _methods
from ..execute import execute
from ._plan import as_method
from .convergence import ConvergenceResult, convergence, nominal_steps
from .numeric import numeric_order
from .problems import describe, get
from .stability import stability_interval
from .symbolic import SymbolicLimitError, derive

__all__ = ["ReportResult", "ReportRow", "method_family", "run_report"]

STABILITY_H = 0.5
ORDER_SIGMAS = (1.0, 0.1)


FAMILIES = (
    "DDIM and singlestep DPM-Solver",
    "multistep DPM-Solver",
    "UniPC and UniP",
    "DEIS and LMS",
    "classical Runge-Kutta",
    "fixed-coefficient Adams",
    "other tables",
)


def method_family(method) -> str:
    """The panel of the report's figures that ``method`` (a name or a table) is drawn in: one of ``FAMILIES``."""
    m = as_method(method)
    if isinstance(m, _methods.ExponentialRK):
        return FAMILIES[0]
    if isinstance(m, _methods.ExponentialMultistep):
        if m.name.startswith("unip"):
            return FAMILIES[2]
        if m.name.startswith(("deis", "lms")) or m.variable != "lambda":
            return FAMILIES[3]
        return FAMILIES[1]
    if isinstance(m, _methods.RungeKutta):
        return FAMILIES[4]
    if isinstance(m, (_methods.FixedAdams, _methods.momentum.Momentum)):  # momentum: Adams with a velocity
        return FAMILIES[5]
    return FAMILIES[6]


def _error_cell(value: float, width: int = 0) -> str:
    """An error as ``1.23e-04``, or a dash where the method cannot fit the NFE budget (NaN)."""
    text = "-" if math.isnan(value) else f"{value:.2e}"
    return f"{text:>{width}}" if width else text


@dataclass(frozen=True)
class ReportRow:
    method: str
    declared: int
    derived: int | None
    derived_slope: float
    symbolic: int | None
    measured: float
    errors: dict  # nfe -> RMS error (NaN when the NFE is too small for the method)
    nfe_used: dict  # requested nfe -> actual model calls
    stability: float  # mu* at h = STABILITY_H (lambda test)
    study: ConvergenceResult | None = None
    note: str = ""

    @property
    def consistent(self) -> bool:
        return self.derived == self.declared and (self.symbolic is None or self.symbolic == self.declared)


@dataclass
class ReportResult:
    rows: list[ReportRow]
    problem: str
    nfe: tuple[int, ...]
    out: FsPath | None
    figures: list[str] = field(default_factory=list)
    markdown: str | None = None
    seconds: float = 0.0

    def table(self) -> str:
        nfe_cols = "".join(f"{'err@' + str(n):>10}" for n in self.nfe)
        mu_col = f"mu*({STABILITY_H})"
        head = f"{'method':<20}{'decl':>5}{'deriv':>6}{'symb':>5}{'meas':>6}{nfe_cols}{mu_col:>10}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            sym = "-" if r.symbolic is None else str(r.symbolic)
            der = "?" if r.derived is None else str(r.derived)
            errs = "".join(_error_cell(r.errors.get(n, math.nan), 10) for n in self.nfe)
            flag = "" if r.consistent else "  <- declared order disagrees"
            lines.append(
                f"{r.method:<20}{r.declared:>5}{der:>6}{sym:>5}{r.measured:>6.2f}{errs}{r.stability:>10.3f}{flag}"
            )
        return "\n".join(lines)

    @property
    def ok(self) -> bool:
        return all(r.consistent for r in self.rows)


def _progress(total, disable):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc="odesolve report", unit="method", disable=disable, file=sys.stderr)


def _practical_errors(m, problem, nfe, n, seed):
    """RMS error at sigma = 0 on Karras grids (sigma 80 -> 0) from exact samples at sigma = 80."""
    errs, used = {}, {}
    for k in nfe:
        steps = nominal_steps(m, k)
        if steps < 2:
            errs[k], used[k] = math.nan, 0
            continue
        g = _grids.karras(problem.path, steps, sigma_min=0.002, sigma_max=80.0)
        plan = m.compile(g.path, g)
        out = execute(plan, problem.model(plan.prediction), problem.x)
        errs[k], used[k] = problem.error(out), plan.calls
    return errs, used


def run_report(
    methods: Sequence[str] | None = None,
    problem: str = "gmm2d",
    nfe: Sequence[int] = (5, 10, 20),
    out: str | FsPath | None = "report",
    quick: bool = False,
    *,
    progress: bool = True,
    figures: bool = True,
) -> ReportResult:
    """Analyse ``methods`` (default: every registered method) on ``problem``; write figures and
    ``report.md`` to ``out`` (``None``: nothing written). ``quick`` uses fewer samples and resolutions.

    Runs with one torch thread (restored afterwards): the work is many tiny float64 operations, for
    which intra-op threads only add synchronisation (10x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_report(methods, problem, nfe, out, quick, progress, figures)
    finally:
        torch.set_num_threads(threads)


def _run_report(methods, problem, nfe, out, quick, progress, figures) -> ReportResult:
    t0 = time.perf_counter()
    names = list(methods) if methods else [n for n in _methods.names() if not _methods.get(n).stochastic]
    tables = [as_method(n) for n in names]
    noisy = [m.name for m in tables if m.stochastic]
    if noisy:
        raise ValueError(
            f"methods: {noisy} inject noise; the report measures order against the exact solution of the "
            "probability-flow ODE, which a stochastic method does not follow (their strong and weak orders are "
            "measured in the stochastic-samplers lesson, docs/stochastic.md)"
        )
    nfe = tuple(int(k) for k in nfe)
    if not nfe or min(nfe) < 1:
        raise ValueError(f"nfe must be positive integers, got {nfe}")
    if out is not None:  # before the minutes of work: a bad folder fails now, not at the end
        if FsPath(out).exists() and not FsPath(out).is_dir():
            raise ValueError(f"out must be a folder, got the existing file {str(out)!r}")
        FsPath(out).mkdir(parents=True, exist_ok=True)
    n_samples = 8 if quick else 32
    ladder = (8, 16, 32) if quick else (8, 16, 32, 64)
    deriv_steps = (8, 16, 32) if quick else (8, 16, 32, 64)
    prac = get(problem, sigma_start=80.0, sigma_end=0.0, n=n_samples, seed=1)
    order_p = get(problem, sigma_start=ORDER_SIGMAS[0], sigma_end=ORDER_SIGMAS[1], n=n_samples, seed=2)
    bar = _progress(len(tables), not progress)
    rows = []
    for m in tables:
        if bar is not None:
            bar.set_postfix_str(m.name)
        note = ""
        try:
            no = numeric_order(m, steps=deriv_steps)
            derived, dslope = no.order, no.slope
        except (ValueError, RuntimeError) as err:
            derived, dslope, note = None, math.nan, f"derived: {err}"
        try:
            sym = derive(m, timeout=10.0).order
        except (SymbolicLimitError, TypeError):
            sym = None
        study = convergence(m, order_p, "karras", steps=[s for s in ladder])
        errs, used = _practical_errors(m, prac, nfe, n_samples, 1)
        stab = stability_interval(m, STABILITY_H, "lambda")
        rows.append(ReportRow(m.name, m.order, derived, dslope, sym, study.slope, errs, used, stab, study, note))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    res = ReportResult(rows, problem, nfe, FsPath(out) if out is not None else None)
    if out is not None:
        outdir = FsPath(out)
        outdir.mkdir(parents=True, exist_ok=True)
        if figures:
            res.figures = _figures(res, outdir, prac, order_p, quick)
        res.seconds = time.perf_counter() - t0
        res.markdown = str(_markdown(res, outdir))
    res.seconds = time.perf_counter() - t0
    return res


def _figures(res: ReportResult, outdir: FsPath, prac, order_p, quick: bool) -> list[str]:
    from . import plots
    from .stability import guidance_stability
    from .truncation import local_errors

    files = []
    dpi = 72 if quick else 100
    names = [r.method for r in res.rows]
    fig = _figure_by_family(
        res,
        lambda ax, rows: plots.plot_convergence([r.study for r in rows if r.study is not None], title="", ax=ax),
        f"measured order on {res.problem} (Karras grids, sigma {ORDER_SIGMAS[0]} -> {ORDER_SIGMAS[1]}; "
        "fitted points circled, dotted: slopes 1-4)",
    )
    files.append(plots.save(fig, outdir / "convergence.png", dpi))
    title = f"{res.problem}: RMS error at sigma = 0 against NFE, Karras grids 80 -> 0 (no point: budget too small)"
    fig = _figure_by_family(res, _draw_errors, title)
    files.append(plots.save(fig, outdir / "errors.png", dpi))
    rep = [n for n in ("ddim", "dpmpp-2m", "dpmpp-3m", "unipc-bh2-3") if n in names] or names[:4]
    fig = plots.plot_stability_regions(
        rep, STABILITY_H, "lambda", re=(-4.0, 0.5), im=(-2.5, 2.5), n=(121, 81) if quick else (241, 161)
    )
    files.append(plots.save(fig, outdir / "stability.png", dpi))
    g = _grids.karras(prac.path, 10, sigma_min=0.002, sigma_max=80.0)
    guided = [guidance_stability(n, g, [0.05, 0.5], [0.5, 0.5], 4.0) for n in rep]
    files.append(
        plots.save(
            plots.plot_guidance(guided, title="Gaussian pair, guidance w = 4, 10 Karras steps"),
            outdir / "guidance.png",
            dpi,
        )
    )
    lte = [local_errors(n, order_p, steps=8 if quick else 10, fan=not quick) for n in rep[:2]]
    files.append(plots.save(plots.plot_local_errors(lte), outdir / "local_errors.png", dpi))
    if prac.x.ndim == 2 and prac.x.shape[1] == 2:
        fig = plots.plot_trajectories(
            rep[0],
            order_p,
            steps=10,
            n_show=8 if quick else 16,
            points=20 if quick else 40,
            title=f"{rep[0]}: sample paths from sigma = {order_p.sigma_start:g}",
        )
        files.append(plots.save(fig, outdir / "trajectories.png", dpi))
    return files


def _figure_by_family(res: ReportResult, draw, title: str):
    """Small multiples: one panel per method family present in ``res``, ``draw(ax, rows)`` fills each."""
    from .plots import small_multiples

    groups: dict[str, list[ReportRow]] = {}
    for r in {r.method: r for r in res.rows}.values():  # a method asked for twice (by an alias) drawn once
        groups.setdefault(method_family(r.method), []).append(r)
    families = [f for f in FAMILIES if f in groups]
    fig, axes = small_multiples(families, ncols=3, title=title)
    for i, (ax, family) in enumerate(zip(axes, families)):
        draw(ax, groups[family])
        ax.set_title(family, fontsize=9)
        ax.xaxis.set_tick_params(labelbottom=True)  # every panel keeps its NFE labels (a short last row too)
        if i % 3:
            ax.set_ylabel("")
    _plain_ticks(axes[0].xaxis)  # the panels share x: NFE as plain numbers
    return fig


def _plain_ticks(axis) -> None:
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def _draw_errors(ax, rows) -> None:
    for i, r in enumerate(rows):
        x = [r.nfe_used[k] for k in r.errors if r.nfe_used.get(k)]
        y = [r.errors[k] for k in r.errors if r.nfe_used.get(k)]
        ax.loglog(x, y, marker="o", ms=3, lw=1, color=f"C{i % 10}", label=r.method)
    ax.set_xlabel("NFE")
    ax.set_ylabel("RMS error at sigma = 0")
    ax.legend(fontsize=6)


def _markdown(res: ReportResult, outdir: FsPath) -> FsPath:
    desc = describe(res.problem)
    lines = [
        f"# odesolve report: {res.problem}",
        "",
        f"Problem: {desc or res.problem}. Float64 states, exact model, DOP853 reference (rtol 1e-12).",
        "",
        (
            "- **declared**: the table's `order`; **derived**: `analysis.numeric_order` (polynomial and linear "
            "test models through the plan on random grids); **symbolic**: `analysis.derive` (closed form, "
            "where one exists);"
        ),
        (
            f"- **measured**: least-squares slope of error vs NFE, Karras grids sigma {ORDER_SIGMAS[0]} -> "
            f"{ORDER_SIGMAS[1]};"
        ),
        (
            "- **err@NFE**: RMS error at sigma = 0 on Karras grids sigma 80 -> 0 (first-order last step); "
            "a dash where the method cannot fit the budget (fewer than two steps);"
        ),
        (
            f"- **mu\\***: most negative stable mu on the lambda test, uniform lambda-steps h = {STABILITY_H} "
            "(DDIM: -2/(e^h - 1))."
        ),
        "",
        "| method | declared | derived | symbolic | measured | " + " | ".join(f"err@{n}" for n in res.nfe) + " | mu* |",
        "|---|---|---|---|---|" + "---|" * len(res.nfe) + "---|",
    ]
    for r in res.rows:
        sym = "-" if r.symbolic is None else str(r.symbolic)
        der = "?" if r.derived is None else str(r.derived)
        errs = " | ".join(_error_cell(r.errors.get(n, math.nan)) for n in res.nfe)
        mark = "" if r.consistent else " **(!)**"
        lines.append(
            f"| {r.method}{mark} | {r.declared} | {der} | {sym} | {r.measured:.2f} | {errs} | {r.stability:.3f} |"
        )
    lines += ["", f"{len(res.rows)} methods in {res.seconds:.0f} s.", ""]
    noisy = [n for n in _methods.names() if _methods.get(n).stochastic]
    if noisy:
        lines += [
            "Stochastic methods are not in this table (it measures order against the probability-flow ODE): "
            + ", ".join(
                f"`{n}` (strong {_methods.get(n).strong_order:g}, weak {_methods.get(n).weak_order})" for n in noisy
            )
            + ".",
            "",
        ]
    for f in res.figures:
        name = FsPath(f).name
        lines += [f"![{name}]({name})", ""]
    path = outdir / "report.md"
    path.write_text("\n".join(lines))
    return path
