"""odesolve.adaptive: per-sample adaptive steps through the one executor.

Checked against closed forms and peers: per-sample plans against ordinary one-step plans, the error
against the exact toy reference as the tolerance shrinks, a sample's result alone against the same
sample in any batch (bit for bit), the network evaluations the model actually sees against the
reported counts, and the batch-wide mode against k-diffusion's own ``sample_dpm_adaptive``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve import adaptive
from odesolve.adaptive import PAIRS, EmbeddedPair, PIDController, sample_adaptive, sample_dpm_adaptive
from odesolve.execute import Program
from odesolve.toy import problems, reference

GMM = problems.get("gmm2d")
T0, T1 = GMM.times()


def rowwise(model: ods.Model) -> ods.Model:
    """The model evaluated one sample at a time: its output for a sample cannot depend on the batch
    (the toy models' batched linear algebra may round differently for another batch size)."""
    fn = lambda x, t: torch.cat([model(x[i : i + 1], t[i : i + 1]) for i in range(x.shape[0])])
    return ods.Model(fn, model.path, model.prediction)


class Counting:
    """A model that records the batch size of every call."""

    def __init__(self, model: ods.Model):
        self.sizes = []
        self.model = ods.Model(self._call, model.path, model.prediction)
        self._inner = model

    def _call(self, x, t):
        self.sizes.append(x.shape[0])
        return self._inner(x, t)


def _x(n, seed=0):
    return GMM.prior(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_pairs_share_their_first_calls(name):
    """The low table's calls are the high table's first calls, with bitwise equal inputs: the lockstep
    run may feed one model output to both."""
    pair = PAIRS[name]
    t0 = torch.tensor([50.0, 3.0, 0.7], dtype=torch.float64)
    t1 = torch.tensor([20.0, 2.5, 0.01], dtype=torch.float64)
    low, high = pair.plans(ods.paths.EDM(), t0, t1)
    assert low.batch == high.batch == 3 and high.calls == pair.calls
    s = low.calls
    assert s < high.calls
    assert torch.equal(low.times, high.times[:s])
    assert torch.equal(low.input_state, high.input_state[:s])
    assert torch.equal(low.input_hist[:s, : low.window], high.input_hist[:s, : low.window])
    assert pair.order == pair.high.order > pair.low.order


@pytest.mark.parametrize("name", ["dpm-solver-3", "dpmpp-3s", "dpm-solver-2"])
@pytest.mark.parametrize("path", [ods.paths.EDM(), ods.paths.VPLinear()], ids=["edm", "vp"])
def test_per_sample_plan_runs_each_sample_on_its_own_step(name, path):
    """A per-sample plan (coefficients of shape (batch,)) run by the executor gives every sample the
    result of the ordinary plan of its own one-step grid."""
    table = ods.methods.get(name)
    pair = EmbeddedPair("probe", ods.methods.get("ddim" if table.prediction == "x0" else "dpm-solver-1"), table)
    model = ods.toy.problems.get("gmm2d").with_path(path).model("eps")
    lam0 = torch.tensor([-3.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    lam1 = lam0 + torch.tensor([0.3, 1.1, 0.05, 2.0], dtype=torch.float64)
    t0, t1 = path.t_of_lambda(lam0), path.t_of_lambda(lam1)
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, high = pair.plans(path, t0, t1)
    got = Program(high, "eps", x.shape, x.dtype).run(model, x)
    for b in range(4):
        grid = ods.grids.from_times(path, torch.stack([t0[b], t1[b]]))
        want = ods.sample(model, x[b : b + 1], grid, method=table)
        assert (got[b] - want[0]).abs().max() <= 1e-12 * (1 + want.abs().max()), b


def test_per_sample_plan_refuses_another_batch():
    low, _ = PAIRS["dpm-solver-12"].plans(ods.paths.EDM(), torch.full((3,), 2.0, dtype=torch.float64), torch.ones(3))
    with pytest.raises(ValueError, match="per-sample plan has 3 samples"):
        Program(low, "x0", (4, 2), torch.float64)


@pytest.fixture(scope="module")
def gmm_reference():
    x = _x(8)
    return x, reference.solve(GMM.model("x0"), x, T0, T1, rtol=1e-10, atol=1e-10, check="off")


@pytest.mark.parametrize("pair", ["dpm-solver-23", "dpmpp-23"])
def test_error_shrinks_with_the_tolerance(gmm_reference, pair):
    """The error against the exact reference falls with the tolerance: at least 4x per 10x tighter
    tolerance (a method of local order p + 1 gives 10^(p/(p+1))), and stays within 50 tol (the
    global error of a locally controlled run is a sum of local errors)."""
    x, ref = gmm_reference
    model = GMM.model("x0")
    errors, costs = [], []
    for tol in (1e-2, 1e-3, 1e-4):
        r = sample_adaptive(model, x, T0, T1, pair=pair, rtol=tol, atol=tol, controller=PIDController.pi())
        errors.append(float(((r.samples - ref).norm(dim=1) / math.sqrt(2)).max()))
        costs.append(r.total_nfe)
        assert errors[-1] <= 50 * tol, (tol, errors[-1])
    assert errors[1] < errors[0] / 4 and errors[2] < errors[1] / 4, errors
    assert costs[0] < costs[1] < costs[2]


@settings(max_examples=4, deadline=None)
@given(
    st.lists(st.integers(0, 7), min_size=1, max_size=4, unique=True),
    st.sampled_from(["dpm-solver-23", "dpmpp-12"]),
)
def test_a_sample_does_not_depend_on_its_batch(idx, pair):
    """Sample i alone and sample i inside any batch, at any position: the same bits, the same counts."""
    model = rowwise(GMM.model("x0"))
    x = _x(8, seed=3)
    kw = dict(pair=pair, rtol=2e-2, atol=2e-3)
    batch = sample_adaptive(model, x[idx], T0, T1, **kw)
    for pos, i in enumerate(idx):
        alone = sample_adaptive(model, x[i : i + 1], T0, T1, **kw)
        assert torch.equal(alone.samples[0], batch.samples[pos]), (i, pos)
        for what in ("nfe", "accepted", "rejected"):
            assert int(getattr(alone, what)[0]) == int(getattr(batch, what)[pos]), (what, i, pos)


def test_finished_samples_leave_the_batch():
    """The network sees exactly the reported evaluations: the rows of all calls sum to the total NFE,
    which is below what a batch stepping until its slowest sample finishes pays."""
    counting = Counting(GMM.model("x0"))
    x = _x(16, seed=4)
    r = sample_adaptive(counting.model, x, T0, T1, rtol=1e-3, atol=1e-4)
    calls = PAIRS["dpm-solver-23"].calls
    assert sum(counting.sizes) == r.total_nfe
    assert torch.equal(r.nfe, calls * (r.accepted + r.rejected))
    assert len(counting.sizes) == int(r.nfe.max())  # one call per stage of the slowest sample
    assert int(r.nfe.min()) < int(r.nfe.max())
    assert r.total_nfe < x.shape[0] * int(r.nfe.max())
    assert counting.sizes == sorted(counting.sizes, reverse=True)  # the batch only shrinks


def test_batch_wide_mode_steps_together():
    counting = Counting(GMM.model("x0"))
    r = sample_adaptive(counting.model, _x(8), T0, T1, per_sample=False)
    assert set(counting.sizes) == {8}
    assert len(set(r.nfe.tolist())) == 1 and len(set(r.accepted.tolist())) == 1


def test_controller_exponents_and_decisions():
    c = PIDController(pcoeff=0.4, icoeff=0.3, dcoeff=0.1)
    b1, b2, b3 = c.exponents(3)
    assert (b1, b2, b3) == pytest.approx((0.8 / 3, -0.6 / 3, 0.1 / 3))
    err = torch.tensor([0.5, 4.0], dtype=torch.float64)
    accept, factor, hist = PIDController().propose(err, torch.full((2, 2), math.nan, dtype=torch.float64), 3)
    # elementary controller: factor = 1 + atan(err^(-1/3) - 1)
    want = [1 + math.atan((1 / (e + 1e-8)) ** (1 / 3) - 1) for e in err.tolist()]
    assert factor.tolist() == pytest.approx(want, rel=1e-14)
    assert accept.tolist() == [True, False]
    assert hist[0, 0] == pytest.approx(-math.log(0.5 + 1e-8)) and math.isnan(hist[1, 0]) is False


# -- k-diffusion ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def K():
    from benchmarks import peers

    mod = peers.k_sampling()
    if mod is None:
        pytest.skip("k-diffusion is not installed")
    return mod


def _denoiser(x, sigma):
    return GMM.model("x0")(x, sigma.to(torch.float64))


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"rtol": 0.01, "atol": 1e-3}, {"pcoeff": 0.3, "icoeff": 0.5, "dcoeff": 0.1, "h_init": 0.1}],
    ids=["defaults", "tight", "pid"],
)
def test_batch_wide_mode_is_k_diffusions_dpm_adaptive(K, order, kwargs):
    """Same steps, counts and samples as k-diffusion's sample_dpm_adaptive in float64 (k-diffusion run
    with float64 as the default dtype, so that its times and tolerances are float64 too)."""
    x = _x(6, seed=5)
    theirs_cb, ours_cb = [], []
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        theirs, their_info = K.sample_dpm_adaptive(
            _denoiser, x, 0.002, 80.0, disable=True, order=order, return_info=True, callback=theirs_cb.append, **kwargs
        )
    finally:
        torch.set_default_dtype(default)
    ours, our_info = sample_dpm_adaptive(
        _denoiser, x, 0.002, 80.0, order=order, return_info=True, callback=ours_cb.append, **kwargs
    )
    assert our_info == their_info
    assert (ours - theirs).abs().max() <= 1e-10 * theirs.abs().max()
    assert len(ours_cb) == len(theirs_cb)
    for a, b in zip(ours_cb, theirs_cb):
        assert a["i"] == b["i"] and a["n_accept"] == b["n_accept"]
        assert float(a["sigma"]) == pytest.approx(float(b["sigma"]), rel=1e-9)
        assert float(a["error"]) == pytest.approx(float(b["error"]), rel=1e-8)
        assert (a["x"] - b["x"]).abs().max() <= 1e-10 * b["x"].abs().max()
        assert (a["denoised"] - b["denoised"]).abs().max() <= 1e-10 * (1 + b["denoised"].abs().max())


# -- bad inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pair": "dpm-solver-34"}, "pair must be one of"),
        ({"rtol": -1.0}, "rtol must be"),
        ({"rtol": 0.0, "atol": 0.0}, "both 0"),
        ({"atol": math.nan}, "atol must be"),
        ({"h_init": 0.0}, "h_init must be"),
        ({"max_attempts": 0}, "max_attempts must be"),
        ({"controller": "pi"}, "controller"),
        ({"pair": 3}, "pair"),
    ],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sample_adaptive(GMM.model("x0"), _x(2), T0, T1, **kwargs)


def test_bad_intervals_and_models_are_refused():
    model = GMM.model("x0")
    with pytest.raises(ValueError, match="noisier time"):
        sample_adaptive(model, _x(2), T1, T0)
    with pytest.raises(ValueError, match="finite lambda"):
        sample_adaptive(model, _x(2), T0, 0.0)
    with pytest.raises(TypeError, match="model"):
        sample_adaptive(lambda x, t: x, _x(2), T0, T1)
    with pytest.raises(RuntimeError, match="max_attempts"):
        sample_adaptive(model, _x(2), T0, T1, max_attempts=3)
    nan_model = ods.Model(lambda x, t: x * math.nan, model.path, "x0")
    with pytest.raises((ValueError, ods.NonFiniteError), match="NaN|not finite"):
        sample_adaptive(nan_model, _x(2), T0, T1)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"eta": 1.0}, "eta must be 0"), ({"order": 4}, "order must be 2"), ({"extra_args": 3}, "extra_args")],
)
def test_k_diffusion_function_refuses(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sample_dpm_adaptive(_denoiser, _x(2), 0.002, 80.0, **kwargs)
    with pytest.raises(ValueError, match="sigma_min"):
        sample_dpm_adaptive(_denoiser, _x(2), 0.0, 80.0)


def test_pair_validation():
    m = ods.methods
    with pytest.raises(ValueError, match="must agree"):
        EmbeddedPair("x", m.get("ddim"), m.get("dpm-solver-2"))
    with pytest.raises(ValueError, match="first stages"):
        EmbeddedPair("x", PAIRS["dpm-solver-23"].low, m.get("dpm-solver-2"))
    with pytest.raises(ValueError, match="below"):
        EmbeddedPair("x", m.get("dpm-solver-2"), m.get("dpm-solver-2"))
    with pytest.raises(ValueError, match="accept_safety"):
        PIDController(accept_safety=1.5)
    assert adaptive.PAIRS["dpm-solver-23"].calls == 3


@pytest.mark.parametrize("pair", ["dpm-solver-23", "dpmpp-23"])
def test_other_paths_and_predictions(pair):
    """A VP path with an eps-model: the run stays within its tolerance of the exact flow."""
    problem = GMM.with_path(ods.paths.VPLinear())
    model = problem.model("eps")
    t0, t1 = problem.times()
    x = problem.prior(4, torch.Generator().manual_seed(2))
    exact = reference.solve(model, x, t0, t1, rtol=1e-10, atol=1e-10, check="off")
    r = sample_adaptive(model, x, t0, t1, pair=pair, rtol=1e-3, atol=1e-3)
    assert float((r.samples - exact).abs().max()) <= 50e-3
    assert int(r.rejected.sum()) >= 0 and int(r.accepted.min()) >= 3


def test_k_diffusion_function_in_float32():
    """float32 states (k-diffusion's usual dtype) give the float64 result to float32 accuracy."""
    x = _x(3, seed=6)
    want = sample_dpm_adaptive(_denoiser, x, 0.002, 80.0)
    got = sample_dpm_adaptive(_denoiser, x.float(), 0.002, 80.0)
    assert got.dtype == torch.float32
    assert float((got.double() - want).abs().max()) <= 1e-3 * float(want.abs().max())


def test_benchmark_interpolates_cost_at_equal_error():
    """benchmarks.adaptive compares solvers at equal error by log-log interpolation: exact on power laws."""
    from benchmarks.adaptive import nfe_at, ratios

    curve = [(tol, round(100 * tol**-0.25), 1e-2 * (tol / 1e-2), 0.0) for tol in (1e-1, 1e-2, 1e-3)]
    twice = [(tol, 2 * n, e, m) for tol, n, e, m in curve]
    assert nfe_at(curve, 1e-2, 2) == pytest.approx(curve[1][1])
    assert nfe_at(curve, 1e-5, 2) is None
    got = ratios({"curves": {"a": curve, "b": twice}}, "a", 2)["b"]
    assert len(got) == 5 and all(r == pytest.approx(2.0) for _, r in got)
