"""Tables are validated data: constructors refuse inconsistent tables with a clear error, the former
keywords map onto the declared fields, and multistep weight variants are rows that compile reads."""

from fractions import Fraction as Fr

import pytest
import torch

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.methods import ExponentialMultistep, ExponentialRK, FixedAdams, RungeKutta, Weight
from odesolve.methods.exponential_multistep import BH1, MIDPOINT

EDM = P.EDM()
h2 = Fr(1, 2)


@pytest.mark.parametrize(
    "make, err, match",
    [
        # every table
        (lambda: ExponentialRK("x", order=0, prediction="x0"), ValueError, "order must be a positive integer"),
        (lambda: ExponentialRK("x", order=1, prediction="v"), ValueError, "prediction must be 'x0' or 'eps'"),
        # classical Runge-Kutta integrates eps in rho: an x0-prediction table would be silently wrong
        (lambda: RungeKutta("x", order=1, prediction="x0"), ValueError, "prediction must be 'eps'"),
        (lambda: RungeKutta("x", order=2, c=(Fr(0), Fr(1)), a=((Fr(1, 2),),), b=(h2, h2)), ValueError, "row 1 of a"),
        (lambda: RungeKutta("x", order=2, c=(Fr(0), Fr(1)), a=((Fr(1),),), b=(h2, Fr(1))), ValueError, "b sums"),
        (lambda: RungeKutta("x", order=2, c=(Fr(0), Fr(3, 2)), a=((Fr(3, 2),),), b=(h2, h2)), ValueError, r"\[0, 1\]"),
        (lambda: RungeKutta("x", order=3, c=(Fr(0), Fr(1)), a=((Fr(1),),), b=(h2, h2)), ValueError, "exceeds"),
        (lambda: RungeKutta("x", order=2, c=(Fr(0), 1.0), a=((Fr(1),),), b=(h2, h2)), TypeError, "Fraction"),
        # fixed Adams: only the coefficient sets it has, only its two warm-ups
        (lambda: FixedAdams("x", order=2, steps_back=7), ValueError, r"steps_back must be an integer in \[1, 6\]"),
        (lambda: FixedAdams("x", order=2, steps_back=0), ValueError, "steps_back"),
        (lambda: FixedAdams("x", order=2, warmup="rk4"), ValueError, "warmup must be one of"),
        (lambda: FixedAdams("x", order=3, steps_back=4), ValueError, "at most order 2"),
        (lambda: FixedAdams("x", order=1, prediction="x0"), ValueError, "prediction must be 'eps'"),
        # exponential RK: every row exact for constants, nodes inside the step
        (
            lambda: ExponentialRK("x", order=2, prediction="x0", c=(Fr(0), h2), a=(((h2,),),), b=((Fr(0),), (Fr(1),))),
            ValueError,
            "chi_1 weights of row 1 of a sum to 1/2",
        ),
        (
            lambda: ExponentialRK(
                "x", order=2, prediction="x0", c=(Fr(0), h2), a=(((Fr(1),),),), b=((Fr(1), Fr(-1)), (Fr(0), Fr(2)))
            ),
            ValueError,
            "chi_2 weights of b sum to 1, not 0",
        ),
        (
            lambda: ExponentialRK("x", order=1, prediction="x0", c=(h2,), a=(), b=((Fr(1),),)),
            ValueError,
            "start with 0",
        ),
        (
            lambda: ExponentialRK(
                "x", order=2, prediction="x0", c=(Fr(0), Fr(2)), a=(((Fr(1),),),), b=((Fr(0),), (Fr(1),))
            ),
            ValueError,
            r"\[0, 1\]",
        ),
        (
            lambda: ExponentialRK("x", order=2, prediction="x0", c=(Fr(0), h2), a=(), b=((Fr(1),),)),
            ValueError,
            "lengths",
        ),
        (lambda: ExponentialRK("x", order=2, prediction="x0"), ValueError, "exceeds the number of stages"),
        (lambda: ExponentialRK("x", order=1, prediction="x0", b=((0.5,), (0.5,))), TypeError, "Fraction"),
        # exponential multistep: weight rows, variables, warm-up, corrector
        (lambda: ExponentialMultistep("x", order=1, prediction="x0", nodes=0), ValueError, "nodes must be"),
        (lambda: ExponentialMultistep("x", order=2, prediction="x0", nodes=2, variable="rho"), ValueError, "eps"),
        (
            lambda: ExponentialMultistep("x", order=2, prediction="eps", nodes=2, variable="t", weights=MIDPOINT),
            ValueError,
            "exact weights",
        ),
        (
            lambda: ExponentialMultistep("x", order=2, prediction="x0", nodes=2, weights=((2, 0, Weight(h=Fr(1))),)),
            ValueError,
            "term 0",
        ),
        (
            lambda: ExponentialMultistep("x", order=2, prediction="x0", nodes=2, weights=MIDPOINT + BH1),
            ValueError,
            "two weight rows",
        ),
        (
            lambda: ExponentialMultistep("x", order=2, prediction="x0", nodes=2, weights=((2, 1, 0.5),)),
            TypeError,
            "rows",
        ),
        (lambda: ExponentialMultistep("x", order=3, prediction="x0", nodes=2), ValueError, "exceeds nodes"),
        (
            lambda: ExponentialMultistep("x", order=2, prediction="eps", nodes=2, warmup=ods.methods.get("dpmpp-2s")),
            ValueError,
            "same prediction",
        ),
        (
            lambda: ExponentialMultistep(
                "x", order=3, prediction="x0", nodes=2, corrector=True, warmup=ods.methods.get("dpmpp-2s")
            ),
            ValueError,
            "cannot be combined",
        ),
        (lambda: Weight(chi=(0.5,)), TypeError, "Fraction"),
    ],
)
def test_inconsistent_tables_are_refused(make, err, match):
    with pytest.raises(err, match=match):
        make()


@pytest.mark.parametrize(
    "make, keyword",
    [
        (lambda: ExponentialRK("x", order=1, form="noise"), "form"),
        (lambda: ExponentialMultistep("x", order=2, prediction="x0", nodes=2, two_node="midpoint"), "two_node"),
        (
            lambda: ExponentialMultistep("x", order=2, prediction="x0", nodes=3, half_second_difference=True),
            "half_second_difference",
        ),
    ],
)
def test_removed_keywords_are_refused(make, keyword):
    """One name for one thing: ``prediction`` (not ``form``), weight rows (not flags)."""
    with pytest.raises(TypeError, match=keyword):
        make()
    assert not hasattr(ods.methods.get("dpm-solver-2m"), "form")


def test_weight_rows_are_what_compile_reads():
    """A row equal to the exact Taylor weight changes nothing; the midpoint row is dpmpp-2m's; the
    exact weight of term i is i! chi_{i+1}."""
    grid = G.karras(EDM, 9, sigma_min=0.05, to_zero=False)
    taylor = ods.methods.get("dpmpp-2m-taylor").compile(EDM, grid)
    same = ExponentialMultistep("x", order=2, prediction="x0", nodes=2, weights=((2, 1, Weight(chi=(0, 1))),))
    assert torch.equal(same.compile(EDM, grid).update_hist, taylor.update_hist)
    mid = ExponentialMultistep("y", order=2, prediction="x0", nodes=2, weights=MIDPOINT).compile(EDM, grid)
    assert torch.equal(mid.update_hist, ods.methods.get("dpmpp-2m").compile(EDM, grid).update_hist)
    assert not torch.equal(mid.update_hist, taylor.update_hist)
    assert Weight.taylor(3) == Weight(chi=(0, 0, 0, 6))
    assert ods.methods.get("dpmpp-3m").weight(3, 2) == Weight(chi=(0, 0, 1))
    assert ods.methods.get("dpmpp-3m").weight(3, 1) == Weight.taylor(1)  # no row for 3 nodes: exact


def test_fixed_adams_coefficients_are_the_adams_bashforth_weights():
    from odesolve.analysis import adams_bashforth

    m = FixedAdams("ab6", order=2, steps_back=6)
    for q, beta in enumerate(m.beta, start=1):
        assert beta == adams_bashforth(q).beta[:-1][::-1]
    assert m.compile(EDM, G.karras(EDM, 10)).window == 6


def test_declared_structure_of_the_families():
    assert ods.methods.get("heun").variable == "rho" and ods.methods.get("ipndm").variable == "rho"
    assert ods.methods.get("deis-3").variable == "t" and ods.methods.get("lms-3").variable == "rho"
    assert ods.methods.get("dpmpp-3s").variable == "lambda" and ods.methods.get("unipc-bh2-3").variable == "lambda"
    assert ods.methods.get("dpmpp-2m").prediction == "x0" and ods.methods.get("rk4").prediction == "eps"
    assert ods.methods.get("unipc-bh2-3").history == 3 and ods.methods.get("dpm-solver-3").calls_per_step == 3
