"""The registry contract, shared by every family: a method is tested by being registered.

For every registered method (and for a family written in this file, registered by one line):
structure (the declared attributes and the compiled plan agree), the sigma = 0 end and the alpha = 0
start (finite analytic limits, or a clear refusal), and its order four ways: declared = derived from
the plan (numeric, on random grids drawn by hypothesis) = symbolic (where the table has a closed form)
= measured (convergence on an exact mixture, within 0.2 either way).
"""

import math
import os
from fractions import Fraction as Fr

import pytest
import torch
from exact import GAUSS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.analysis import SymbolicLimitError, convergence, derive, numeric_order, problems
from odesolve.methods.base import Method, refuse_alpha_zero_start, table
from odesolve.plan import Rows

FULL = os.environ.get("ODESOLVE_FULL", "0") == "1"
EDM = P.EDM()
ORDER_SETTINGS = settings(
    deadline=None,
    max_examples=25 if FULL else 1,
    derandomize=not FULL,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# -- a new family, written here: one class, one registry line ---------------------------------------


@table
class TwoStageRho(Method):
    """Explicit two-stage RK in (rho, x/alpha) with its second node at c2 (Ralston: c2 = 2/3), written
    directly against ``odesolve.plan.Rows``: the second order pair a21 = c2, b = (1 - 1/(2 c2), 1/(2 c2))."""

    prediction: str = "eps"
    c2: Fr = Fr(2, 3)
    variable = "rho"

    @property
    def calls_per_step(self) -> int:
        return 2

    @property
    def c(self):
        return (Fr(0), self.c2)

    @property
    def a(self):
        return ((self.c2,),)

    @property
    def b(self):
        return (1 - 1 / (2 * self.c2), 1 / (2 * self.c2))

    def derivation(self, max_order=None, budget=None):
        from odesolve.analysis.symbolic.butcher import tree_order_conditions

        return tree_order_conditions(self, max_order, budget)

    def _rows(self, g, **options):
        refuse_alpha_zero_start(self, g)
        n = torch.arange(g.steps)
        two = ~g.sigma_zero_end  # a stage at sigma = 0 would be singular: Euler in rho there
        counts = 1 + two.long()
        first = torch.cumsum(counts, 0) - counts
        rows = Rows(int(counts.sum()))
        rows.call(first, n, g.t[:-1])
        r0, r1, a0, a1 = g.rho(n), g.rho(n + 1), g.log_alpha[:-1].exp(), g.log_alpha[1:].exp()
        t2 = g.path.t_of_noise_level(r0 + float(self.c2) * (r1 - r0))
        a2 = g.path.alpha(t2)
        k, k2 = first[two], first[two] + 1
        rows.call(k2, n[two], t2[two])
        rows.input_state(k2, (a2 / a0)[two])
        rows.input(k2, k, (a2 * (r1 - r0) * float(self.c2))[two])
        rows.update_state(first + two.long(), a1 / a0)
        b0, b1 = (float(v) for v in self.b)
        rows.update(k2, k, (a1 * (r1 - r0) * b0)[two])
        rows.update(k2, k2, (a1 * (r1 - r0) * b1)[two])
        rows.update(first[~two], first[~two], (a1 * (r1 - r0))[~two])
        return rows


NEW = TwoStageRho("ralston-rho", order=2, paper="Ralston (1962), two stages, in (rho, x/alpha)")
CASES = [*ods.methods.names(), NEW.name]
# stochastic tables (``stochastic = True``) have their own contract (tests/sde): strong and weak order
# measured against the exact toy, per-sample noise; here only their structure and registry lines
DETERMINISTIC = [n for n in CASES if n == NEW.name or not ods.methods.get(n).stochastic]


@pytest.fixture
def method(request):
    if request.param == NEW.name:
        ods.methods.register(NEW)  # the one registry line of the new family
        yield ods.methods.get(NEW.name)
        ods.methods.unregister(NEW.name)
    else:
        yield ods.methods.get(request.param)


each_method = pytest.mark.parametrize("method", CASES, indirect=True)
each_deterministic = pytest.mark.parametrize("method", DETERMINISTIC, indirect=True)


@pytest.fixture(scope="module")
def mixture_problem():
    """A 1-D two-component mixture under EDM, noise 0.6 -> 0.05: x0 still changes along the way, so a
    low-order warm-up step shows, and slopes are asymptotic by 64..128 steps."""
    problem = problems.get("gmm1d", sigma_start=0.6, sigma_end=0.05, n=16, seed=0)
    problem.exact()
    return problem


# -- structure --------------------------------------------------------------------------------------


@each_method
def test_table_declares_its_structure(method):
    m = method
    assert isinstance(m.order, int) and m.order >= 1
    assert m.prediction in ("x0", "eps") and m.variable in ("lambda", "rho", "t")
    assert isinstance(m.options, tuple) and all(isinstance(o, str) for o in m.options)
    assert isinstance(m.calls_per_step, int) and m.calls_per_step >= 1 and isinstance(m.history, int) and m.history >= 0
    assert m.grid_requirement in ("any", "smooth")
    assert m.paper, "every table cites its source"
    grid = G.karras(EDM, 12)
    plan = m.compile(EDM, grid)
    assert plan.prediction == m.prediction
    assert plan.window <= m.history + m.calls_per_step + 1  # the ring holds no more than a warm-up needs
    assert sorted(set(plan.step.tolist())) == list(range(12))  # every step calls the model
    assert plan.calls <= 12 * m.calls_per_step + 1
    for option in m.options:  # every declared option compiles
        value = getattr(m, option) if m.stochastic else True  # eta: a number
        assert m.compile(EDM, grid, **{option: value}).calls >= 12
    with pytest.raises(TypeError, match=r"not_an_option.*accepts") as err:
        m.compile(EDM, grid, not_an_option=True)
    assert all(o in str(err.value) for o in m.options)


@each_deterministic
def test_step_to_sigma_zero_is_the_analytic_limit(method):
    """The last step to sigma = 0 has h = inf in lambda; methods that interpolate in lambda take the limit
    of their first-order update there, x_N = alpha_N x0(x_{N-1}), with no NaN (diffusers #9007, #5689).
    Methods in rho or t step in rho, where sigma = 0 is regular: they keep their full update."""
    grid = G.karras(EDM, 10)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    model = GAUSS.model(EDM)
    out, traj = ods.sample(model, x, grid, method=method, return_trajectory=True)
    assert bool(torch.isfinite(traj).all())
    if method.variable == "lambda":
        assert torch.allclose(out, model.x0(traj[-2], grid.t[-2]), rtol=1e-12, atol=1e-12)
    else:  # a regular step in rho: the full update, more accurate here than DDIM's limit (error 0.58)
        assert float((out - GAUSS.flow(EDM, x, grid.t[0], 0.0)).abs().max()) < 0.5


@each_deterministic
def test_zero_terminal_snr_start(method):
    """alpha = 0 at the first time: x0-prediction methods take the exact limit, eps ones refuse."""
    path = P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True)
    grid = G.discrete(path, 20, spacing="trailing")
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = ods.Model(GAUSS.x0(path), path, "x0")
    if method.prediction == "eps":
        with pytest.raises(ValueError, match="alpha = 0"):
            ods.sample(model, x, grid, method=method)
        return
    out, traj = ods.sample(model, x, grid, method=method, return_trajectory=True)
    assert bool(torch.isfinite(traj).all())
    # the first step is the alpha -> 0 limit of DDIM: x_1 = sigma_1 x_T + alpha_1 x0(x_T)
    a1, s1 = path.alpha(grid.t[1]), path.sigma(grid.t[1])
    assert torch.allclose(traj[1], s1 * x + a1 * model.x0(x, grid.t[0]), rtol=1e-12, atol=1e-12)
    # lambda-steps near alpha = 0 do not shrink with N on a trailing grid (log 2, log 3/2, ...),
    # so 20 steps leave an error of ~0.1-0.2 on this problem (DDIM: 0.18, 2M: 0.12)
    assert float((out - GAUSS.flow(path, x, grid.t[0], grid.t[-1])).abs().max()) < 0.25


# -- order: declared = derived = symbolic = measured -----------------------------------------------

_MEASURED: dict = {}


@each_deterministic
@ORDER_SETTINGS
@given(seed=st.integers(0, 2**16 - 1))
def test_declared_derived_symbolic_and_measured_orders_agree(method, seed, mixture_problem):
    m = method
    derived = numeric_order(m, seed=seed)  # random step ratios ("any") or random smooth grids
    assert derived.order == m.order, derived.table()
    try:
        symbolic = derive(m)
    except SymbolicLimitError:
        assert m.variable == "t"  # DEIS tAB: path-dependent weights, no closed form
    else:
        assert symbolic.order == m.order, symbolic.summary()
    if m.name not in _MEASURED:
        _MEASURED[m.name] = convergence(m, mixture_problem, "karras", steps=(16, 32, 64, 128))
    res = _MEASURED[m.name]
    assert len(res.used) >= 2 and math.isfinite(res.slope), res.table()
    assert abs(res.slope - m.order) <= 0.2, res.table()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["uniform", "karras", "iid"])
@pytest.mark.parametrize("name", CASES[:-1] if FULL else ["dpmpp-3m", "unipc-bh2-3", "rk4", "deis-3"])
def test_derived_order_on_other_families(name, family):
    """Every method keeps its order on smooth grids, and methods for any grid also with independent
    random step ratios (no periodic pattern to average defects out)."""
    m = ods.methods.get(name)
    if family == "iid" and m.grid_requirement != "any":
        pytest.skip("equal-step coefficients are first order on arbitrary grids (tested in test_numeric)")
    assert numeric_order(m, family, (16, 32, 64, 128)).order == m.order


# -- the registry ------------------------------------------------------------------------------------

_DISCRETE = P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012)
_ZSNR = P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True)
_GRIDS = [
    (EDM, G.karras(EDM, 9)),
    (EDM, G.karras(EDM, 7, sigma_min=0.05, to_zero=False)),
    (_DISCRETE, G.discrete(_DISCRETE, 13, spacing="trailing")),
    (_ZSNR, G.discrete(_ZSNR, 6, spacing="trailing")),
]
_FIELDS = ("times", "step", "input_state", "input_hist", "update_state", "update_hist", "update_noise")


def _same_plan(p, q) -> bool:
    return all(
        getattr(p, f).shape == getattr(q, f).shape and torch.equal(getattr(p, f), getattr(q, f)) for f in _FIELDS
    )


@pytest.mark.parametrize("alias", [m for m, _ in ods.methods.ALIASED_TABLES], ids=lambda m: m.name)
def test_each_alias_compiles_bit_identical_to_its_target(alias):
    target = ods.methods.aliases()[alias.name]
    assert ods.methods.get(alias.name) is ods.methods.get(target)
    assert alias.name not in ods.methods.names()
    for path, grid in _GRIDS:
        if alias.prediction == "eps" and path is _ZSNR:
            continue  # both refuse the alpha = 0 start (test_zero_terminal_snr_start)
        assert _same_plan(alias.compile(path, grid), ods.methods.get(target).compile(path, grid)), (alias.name, grid)
        for option in alias.options:  # an alias accepts what its table accepted, with the same plan
            value = 0.5 if alias.stochastic else True  # eta: a number
            assert _same_plan(
                alias.compile(path, grid, **{option: value}),
                ods.methods.get(target).compile(path, grid, **{option: value}),
            )


def test_names_lists_distinct_methods():
    """No two registered names compile to the same plan (on a grid with varying steps)."""
    plans = {name: ods.methods.get(name).compile(*_GRIDS[2]) for name in ods.methods.names()}
    names = list(plans)
    same = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :] if _same_plan(plans[a], plans[b])]
    assert same == []
    assert ods.methods.aliases() == {
        "euler": "dpm-solver-1",
        "deis-1": "dpm-solver-1",
        "lms-1": "dpm-solver-1",
        "deis-logrho-1": "dpm-solver-1",
        "unip-bh1-1": "ddim",
        "unip-bh2-1": "ddim",
        "unip-bh2-2": "dpmpp-2m",
        "euler-ancestral": "ddpm",
    }


def test_unknown_names_get_the_closest_known_names():
    with pytest.raises(ValueError, match="'dpmpp-2m'"):
        ods.methods.get("dpmpp_2m")
    with pytest.raises(ValueError, match="'euler'"):
        ods.methods.get("eulr")


def test_register_refuses_duplicates_and_non_tables():
    with pytest.raises(ValueError, match="already registered"):
        ods.methods.register(ods.methods.get("ddim"))
    with pytest.raises(ValueError, match="already registered"):
        ods.methods.register(ods.methods.RungeKutta("euler", order=1, paper="x"))
    with pytest.raises(TypeError, match="Method"):
        ods.methods.register("ddim")


def test_options_are_declared_and_unknown_ones_refused():
    assert ods.methods.get("dpmpp-3m").options == ("lower_order_final",)
    assert ods.methods.get("heun").options == () and ods.methods.get("dpmpp-2s").options == ()
    # one output per step is already first order: the option is accepted and changes nothing
    grid = G.karras(EDM, 6)
    ddim = ods.methods.get("ddim")
    assert ddim.options == ("lower_order_final",)
    assert torch.equal(ddim.compile(EDM, grid, lower_order_final=True).update_hist, ddim.compile(EDM, grid).update_hist)
    with pytest.raises(TypeError, match=r"\['lower_order_final'\].*none"):
        ods.methods.get("heun").compile(EDM, G.karras(EDM, 4), lower_order_final=True)


def test_lower_order_final_lowers_the_last_two_steps():
    grid = G.karras(EDM, 8, sigma_min=0.02, sigma_max=5.0, to_zero=False)
    plain = ods.methods.get("dpmpp-3m").compile(EDM, grid)
    low = ods.methods.get("dpmpp-3m").compile(EDM, grid, lower_order_final=True)
    nonzero = lambda p, k: int((p.update_hist[k] != 0).sum())
    assert [nonzero(plain, k) for k in range(8)] == [1, 2, 3, 3, 3, 3, 3, 3]
    assert [nonzero(low, k) for k in range(8)] == [1, 2, 3, 3, 3, 3, 2, 1]
    ddim = ods.methods.get("ddim").compile(EDM, grid)
    assert math.isclose(float(low.update_hist[-1, 0]), float(ddim.update_hist[-1, 0]))


def test_the_plan_cache_keys_on_path_equality():
    """Two discrete schedules with the same repr but different betas get their own plans; equal
    schedules built twice share one."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    a, b, a2 = P.VPDiscrete(betas), P.VPDiscrete(betas * 1.01), P.VPDiscrete(betas.clone())
    assert repr(a) == repr(b) and a != b and a == a2 and hash(a) == hash(a2)
    m = ods.methods.get("dpmpp-2m")
    pa = m.compile(a, G.discrete(a, 10, spacing="trailing"))
    pb = m.compile(b, G.discrete(b, 10, spacing="trailing"))
    assert not torch.equal(pa.update_hist, pb.update_hist)
    assert _same_plan(pa, m.compile(a2, G.discrete(a2, 10, spacing="trailing")))
