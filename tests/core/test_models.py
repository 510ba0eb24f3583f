import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve import paths as P
from odesolve.models import classifier_free_guidance, dynamic_thresholding

PATHS = [P.VP.linear(), P.VP.cosine(), P.VP.discrete(), P.EDM(), P.VE(), P.FlowMatching()]
KINDS = ["x0", "eps", "v", "velocity", "score"]


def _truth(path, t, x0, eps):
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    da, ds = (v[:, None] for v in path.derivatives(t))
    return a * x0 + s * eps, {
        "x0": x0,
        "eps": eps,
        "v": a * eps - s * x0,
        "velocity": da * x0 + ds * eps,
        "score": -eps / s,
    }


@pytest.mark.parametrize("path", PATHS, ids=repr)
@given(seed=st.integers(0, 2**31 - 1), u=st.floats(0.05, 0.95))
@settings(max_examples=15, deadline=None)
def test_every_prediction_converts_exactly_into_every_other(path, seed, u):
    g = torch.Generator().manual_seed(seed)
    x0, eps = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(2))
    hi = 50.0 if path.t_max == float("inf") else path.t_max
    t = torch.full((4,), path.t_min + u * (hi - path.t_min), dtype=torch.float64)
    x, truth = _truth(path, t, x0, eps)
    for kind in KINDS:
        model = ods.Model(lambda x, t, v=truth[kind]: v, path, kind)
        for target in KINDS:
            got = model.predict(x, t, target)
            assert torch.allclose(got, truth[target], rtol=1e-9, atol=1e-9), (kind, target)


def test_guidance_is_one_batched_call_and_affine():
    calls = []

    def fn(x, t, c):
        calls.append(x.shape[0])
        return x * c[:, None]

    guided = classifier_free_guidance(fn, 3.0, cond=torch.tensor([2.0, 2.0]), uncond=torch.tensor([1.0, 1.0]))
    x = torch.ones(2, 5)
    out = guided(x, torch.zeros(2))
    assert calls == [4] and torch.allclose(out, torch.full((2, 5), 1 + 3.0 * (2 - 1)))


def test_dynamic_thresholding_clips_the_data_prediction():
    path = P.VP.linear()
    model = ods.Model(lambda x, t: 5 * torch.ones_like(x), path, "x0")
    th = dynamic_thresholding(model, ratio=0.9, max_value=2.0)
    out = th(torch.zeros(3, 10), torch.full((3,), 0.5))
    assert torch.allclose(out, torch.ones(3, 10))  # clipped to 2, divided by 2


def test_bad_models_are_refused():
    with pytest.raises(ValueError, match="prediction"):
        ods.Model(lambda x, t: x, P.EDM(), "noise")
    with pytest.raises(TypeError, match="path"):
        ods.Model(lambda x, t: x, "edm", "eps")
    with pytest.raises(TypeError, match="fn"):
        ods.Model(3, P.EDM(), "eps")
    m = ods.Model(lambda x, t: x[:, :1], P.EDM(), "eps")
    with pytest.raises(ValueError, match="shape"):
        m(torch.ones(2, 3), 1.0)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(batch,\)"):
        ods.Model(lambda x, t: x, P.EDM(), "eps")(torch.ones(2, 3), torch.ones(3))
