"""The report's figures: a panel per method family, titles inside the figure, a dash for a budget too small."""

import math

import pytest

import odesolve as ods
from odesolve.analysis.report import FAMILIES, ReportResult, ReportRow, method_family

matplotlib = pytest.importorskip("matplotlib")
from odesolve.analysis.plots import small_multiples


@pytest.mark.parametrize(
    "name, family",
    [
        ("ddim", "DDIM and singlestep DPM-Solver"),
        ("dpmpp-3s", "DDIM and singlestep DPM-Solver"),
        ("dpmpp-2m", "multistep DPM-Solver"),
        ("dpmpp-3m-corrected", "multistep DPM-Solver"),
        ("unipc-bh1-2", "UniPC and UniP"),
        ("deis-3", "DEIS and LMS"),
        ("lms-2", "DEIS and LMS"),
        ("rk4", "classical Runge-Kutta"),
        ("ipndm", "fixed-coefficient Adams"),
    ],
)
def test_each_method_is_drawn_with_its_family(name, family):
    assert method_family(name) == family


def test_every_registered_ode_method_has_a_named_family():
    ode = [n for n in ods.methods.names() if not ods.methods.get(n).stochastic]
    families = {method_family(n) for n in ode}
    assert families <= set(FAMILIES[:-1]) and len(families) == len(FAMILIES) - 1  # no method in "other tables"


def test_a_budget_the_method_cannot_fit_shows_a_dash():
    row = ReportRow("dpm-solver-3", 3, 3, 3.0, 3, 3.1, {3: math.nan, 10: 1.5e-2}, {3: 0, 10: 9}, -3.9)
    line = ReportResult([row], "gmm2d", (3, 10), None).table().splitlines()[-1]
    assert "nan" not in line and line.split()[5:7] == ["-", "1.50e-02"]


def test_small_multiples_keep_long_titles_inside_the_figure():
    long = "measured order on gmm2d (Karras grids, sigma 1.0 -> 0.1; fitted points circled, dotted: slopes 1-4)"
    fig, axes = small_multiples(["a family with a rather long name for its panel"] * 4, ncols=3, title=long)
    assert len(axes) == 4 and len(fig.axes) == 4  # the two unused panels of the second row are removed
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    box = fig.bbox
    for text in [fig._suptitle] + [ax.title for ax in axes]:
        extent = text.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1 and extent.y1 <= box.y1 + 1, text.get_text()
