"""Bad input is refused at the boundary with an error naming the argument and the expected value."""

import pytest
import torch

from odesolve.paths import EDM, VP
from odesolve.toy import Gaussian, GaussianMixture, LowRankMixture

F64 = torch.float64
EYE = torch.eye(2, dtype=F64)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"weights": [0.5, -0.2, 0.7]}, r"weights must be non-negative"),
        ({"weights": [0.5, 0.4, 0.2]}, r"weights must sum to 1, got sum 1.1"),
        ({"weights": [[0.5, 0.5]]}, r"weights must be a non-empty 1-D vector"),
        ({"weights": [float("nan"), 1.0, 0.0]}, r"weights must be finite"),
        ({"means": torch.zeros(2, 2)}, r"means must have shape \(K, dim\) with K = 3"),
        ({"covs": torch.stack([EYE, EYE])}, r"covs must have shape \(K, dim, dim\) = \(3, 2, 2\)"),
        (
            {"covs": torch.stack([EYE, EYE, torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=F64)])},
            r"covs must be symmetric positive definite: got asymmetry .* \(expected <= 1e-10\)",
        ),
        (
            {"covs": torch.stack([EYE, EYE, torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64)])},
            r"covs must be symmetric positive definite: got smallest eigenvalue -1 \(expected > 0\)",
        ),
        ({"covs": "identity"}, r"covs must be a numeric array"),
    ],
)
def test_gaussian_mixture_arguments(kwargs, match):
    args = {"weights": [0.2, 0.3, 0.5], "means": torch.zeros(3, 2), "covs": torch.stack([EYE] * 3)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**args)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"factors": torch.zeros(2, 4, 5)}, r"factors must have shape \(K, dim, r\) with K = 2 .* 1 <= r <= dim"),
        ({"factors": torch.zeros(3, 4, 2)}, r"factors must have shape \(K, dim, r\) with K = 2"),
        ({"noise": 0.0}, r"noise must be > 0"),
        ({"noise": [0.1, 0.1, 0.1]}, r"noise must be a number or have shape \(K,\) = \(2,\)"),
        ({"means": torch.zeros(2, 3)}, r"means must have shape \(K, dim\) = \(2, 4\)"),
        ({"weights": [0.7, 0.7]}, r"weights must sum to 1"),
    ],
)
def test_lowrank_arguments(kwargs, match):
    args = {"weights": [0.5, 0.5], "means": None, "factors": torch.ones(2, 4, 2), "noise": 0.1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LowRankMixture(**args)


def test_gaussian_arguments():
    with pytest.raises(ValueError, match=r"mean must be a 1-D vector \(dim,\)"):
        Gaussian(torch.zeros(2, 2), EYE)
    with pytest.raises(ValueError, match=r"cov must have shape \(dim, dim\) = \(3, 3\)"):
        Gaussian(torch.zeros(3), EYE)
    with pytest.raises(ValueError, match=r"cov must be symmetric positive definite"):
        Gaussian(torch.zeros(2), -EYE)


def test_evaluation_arguments():
    gmm = GaussianMixture([1.0], [[0.0, 0.0]], [EYE])
    x = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, dim\) = \(batch, 2\)"):
        gmm.log_prob(torch.zeros(4, 3))
    with pytest.raises(TypeError, match=r"x must be a tensor|parameter 'x'"):  # ours, or the runtime type checker's
        gmm.log_prob([[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"t must lie in the domain"):
        gmm.score(x, 2.0, VP.linear())
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(batch,\) = \(4,\)"):
        gmm.score(x, torch.ones(3), EDM())
    # literal arguments: our ValueError, or the runtime type checker's TypeError (the test suite runs one)
    with pytest.raises((ValueError, TypeError), match=r"target must be one of|parameter 'target'"):
        gmm.predict(x, 1.0, EDM(), "noise")
    with pytest.raises(ValueError, match=r"give both t and path"):
        gmm.log_prob(x, 1.0)
    with pytest.raises(ValueError, match=r"t must give finite alpha and sigma"):
        gmm.log_prob(x, float("inf"), EDM())
    with pytest.raises((ValueError, TypeError), match=r"prediction must be one of|parameter 'prediction'"):
        gmm.model(EDM(), "noise")
    with pytest.raises(ValueError, match=r"n must be a non-negative integer"):
        gmm.sample(-1)
    with pytest.raises((ValueError, TypeError), match=r"kind must be 'exact' or 'gaussian'|parameter 'kind'"):
        gmm.sample_prior(2, VP.linear(), kind="uniform")
    with pytest.raises(ValueError, match=r"t_from must lie in the domain"):
        Gaussian(torch.zeros(2), EYE).flow(x, 1.5, 0.0, VP.linear())
