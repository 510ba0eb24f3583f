"""Small pretrained networks shipped with odesolve, for trying methods on a real (learned) model.

    from odesolve.toy import zoo
    model = zoo.load("digits")              # odesolve.Model: network + path + prediction
    images = zoo.data("digits")             # the training images, (1797, 1, 8, 8) in [-1, 1]

``digits`` is a compact residual MLP denoiser (eps-prediction) trained on scikit-learn's 8x8
handwritten digits (1797 images, 17 grey levels, scaled to [-1, 1]) on the DDPM linear-beta path
``VPDiscrete.from_schedule("linear", 1000)``; time is the timestep index, continuous in
``[-1, 999]`` (the network was trained at continuous times in ``[0, 999]`` and is conditioned on
the half log-SNR ``lambda(t)``, which keeps its probability-flow ODE smooth). It was trained by
``scripts/train_digits.py``; the weights, the training images and their labels are package data
(``odesolve/toy/weights/digits.pt``). See ``docs/digits.md``.

Besides the model this module gives what the tests and the docs measure it with: a reference
solution (:func:`reference`), a small classifier of the digits (:func:`digits_classifier`) whose
hidden layer gives features for a Frechet distance (:func:`frechet_distance`).
"""

from __future__ import annotations

import functools
import math
from importlib import resources

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import grids as _grids
from ..execute import sample as _sample
from ..grids import Grid
from ..models import Model
from ..paths import VPDiscrete

__all__ = [
    "DigitsClassifier",
    "DigitsNet",
    "LambdaOfTime",
    "ReferenceAccuracyError",
    "data",
    "digits_classifier",
    "frechet_distance",
    "labels",
    "load",
    "names",
    "network",
    "noise_embedding",
    "reference",
    "reference_grid",
]

_FILES = {"digits": "digits.pt"}


def names() -> list[str]:
    """The models of the zoo."""
    return list(_FILES)


def _check_name(name: str) -> str:
    if name not in _FILES:
        raise ValueError(f"model {name!r} is not in the odesolve zoo; known models: {', '.join(map(repr, _FILES))}")
    return name


@functools.cache
def _checkpoint(name: str) -> dict:
    _check_name(name)
    ref = resources.files("odesolve.toy").joinpath("weights", _FILES[name])
    if not ref.is_file():
        raise FileNotFoundError(f"the weights of model {name!r} ({_FILES[name]}) are missing from the odesolve "
                                f"package data; rebuild them with scripts/train_{name}.py")
    with resources.as_file(ref) as p:
        return torch.load(p, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


def noise_embedding(lam: Tensor, dim: int, w_min: float = 0.1, w_max: float = 3.0) -> Tensor:
    """Fourier features ``cos(w lam), sin(w lam)`` of the half log-SNR ``lam`` (clamped to [-20, 20]),
    ``dim // 2`` frequencies geometric from ``w_min`` to ``w_max`` radians per unit of lambda, computed
    in float32 whatever the network's dtype.

    Low frequencies on purpose: the usual timestep embedding (frequencies up to 1 radian per
    timestep) let a first version of this network wiggle on the scale of single timesteps, so its
    probability-flow ODE was rough and third-order solvers converged at first order. Conditioning
    on lambda, the variable the exponential integrators step in, with periods of 2 and more in
    lambda, keeps the ODE smooth where the solvers look at it."""
    lam = lam.to(torch.float32).clamp(-20.0, 20.0)
    w = torch.exp(torch.linspace(math.log(w_min), math.log(w_max), dim // 2, device=lam.device))
    args = lam[:, None] * w[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class LambdaOfTime:
    """``lambda(t)`` of a :class:`VPDiscrete` path on any device, from a table of ``log alpha`` at the
    integer times (the path interpolates ``log alpha`` linearly in between, and so does this)."""

    def __init__(self, path: VPDiscrete):
        self.table = path.log_alpha(torch.arange(-1.0, path.t_max + 1.0, dtype=torch.float64))
        self._on = {}

    def __call__(self, t: Tensor) -> Tensor:
        key = str(t.device)
        if key not in self._on:
            dt = torch.float32 if t.device.type == "mps" else torch.float64
            self._on[key] = self.table.to(t.device, dt)
        tab = self._on[key]
        n = tab.numel()
        u = (t.to(tab.dtype) + 1.0).clamp(0.0, n - 1.0)
        i = torch.floor(u).long().clamp(max=n - 2)
        la = tab[i] + (u - i) * (tab[i + 1] - tab[i])
        return la - 0.5 * torch.log(-torch.expm1(2.0 * la))  # +inf at t = -1


class _Block(nn.Module):
    """Pre-norm residual MLP block with FiLM time conditioning: h + W2 silu(LN(W1 silu(LN h)) (1 + s) + b)."""

    def __init__(self, hidden: int, emb: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.lin1 = nn.Linear(hidden, hidden)
        self.film = nn.Linear(emb, 2 * hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.lin2 = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.lin2.weight)
        nn.init.zeros_(self.lin2.bias)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        scale, shift = self.film(e).chunk(2, dim=1)
        u = self.norm2(self.lin1(F.silu(self.norm1(h)))) * (1 + scale) + shift
        return h + self.lin2(F.silu(u))


class DigitsNet(nn.Module):
    """The ``digits`` denoiser: a residual MLP on the flattened image (64 pixels) with ``depth``
    blocks of width ``hidden``, conditioned on the time by FiLM from a sinusoidal embedding.

    An MLP, not a UNet: on 8x8 images every pixel is within reach of every other, and on a CPU a
    3x3 convolution at 8x8 runs at a small fraction of the speed of a matrix product (a (32, 64, 64)
    UNet of 1M parameters took 7 times the CPU time per training step of a 2.7M-parameter MLP).
    ``forward(x, lam)`` takes ``x`` of shape ``(batch, *shape)`` and the half log-SNR ``lam`` of
    each sample's noise level (:func:`noise_embedding`); it runs in the dtype of its parameters.
    """

    def __init__(self, shape: tuple[int, ...] | list[int] = (1, 8, 8), hidden: int = 384, depth: int = 4,
                 emb: int = 128):
        super().__init__()
        self.shape = tuple(shape)
        d = math.prod(self.shape)
        self.temb_dim = emb
        self.temb = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.inp = nn.Linear(d, hidden)
        self.blocks = nn.ModuleList([_Block(hidden, emb) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, d)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, lam: Tensor) -> Tensor:
        dtype = self.inp.weight.dtype
        lam = torch.as_tensor(lam, device=x.device)
        if lam.ndim == 0:
            lam = lam.expand(x.shape[0])
        e = F.silu(self.temb(noise_embedding(lam, self.temb_dim).to(dtype)))
        h = self.inp(x.to(dtype).flatten(1))
        for block in self.blocks:
            h = block(h, e)
        return self.out(F.silu(self.out_norm(h))).view(x.shape)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def path_from_config(cfg: dict) -> VPDiscrete:
    """The path a checkpoint was trained on (``cfg["path"]`` holds the diffusers schedule arguments)."""
    return VPDiscrete.from_schedule(**cfg["path"])


@functools.cache
def _path(name: str) -> VPDiscrete:
    # one path object per model, shared by every load() (grids built on one load's path serve all)
    return path_from_config(_checkpoint(name)["config"])


def network(name: str = "digits", device=None, dtype: torch.dtype | None = None) -> nn.Module:
    """The bare network of ``name`` (eval mode, no gradients for its parameters)."""
    ck = _checkpoint(_check_name(name))
    net = DigitsNet(**ck["config"]["net"])
    net.load_state_dict({k: v.to(torch.float32) for k, v in ck["state_dict"].items()})
    net.eval().requires_grad_(False)
    return net.to(device=device, dtype=dtype or torch.float32)


def load(name: str = "digits", device=None, dtype: torch.dtype | None = None) -> Model:
    """The zoo model ``name`` as an :class:`odesolve.Model` on ``device`` with parameters in ``dtype``
    (default float32; bfloat16 and float16 work too, the state is then kept in float32 by the executor).

    The model's ``fn(x, t)`` casts ``x`` to the network's dtype and returns the network's output in
    it; times are embedded in float32. Wrap calls in ``torch.inference_mode()`` when no gradients
    are needed.
    """
    ck = _checkpoint(_check_name(name))
    net = network(name, device, dtype)
    path = _path(name)

    lam_of_t = LambdaOfTime(path)

    def fn(x: Tensor, t: Tensor) -> Tensor:
        return net(x, lam_of_t(t))

    fn.__name__ = name
    model = Model(fn, path=path, prediction=ck["config"]["prediction"])
    model.network = net  # the nn.Module, for users who want it (compile, hooks, ...)
    model.config = ck["config"]
    return model


def data(name: str = "digits", device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The training images of ``name`` in the network's coordinates: for ``digits`` a
    ``(1797, 1, 8, 8)`` tensor with the 17 grey levels 0..16 mapped to ``x / 8 - 1`` in [-1, 1]."""
    ck = _checkpoint(_check_name(name))
    return (ck["data"].to(torch.float32) / 8.0 - 1.0).unsqueeze(1).to(device=device, dtype=dtype)


def labels(name: str = "digits", device=None) -> Tensor:
    """The class labels (int64) of :func:`data`."""
    return _checkpoint(_check_name(name))["labels"].to(device=device, dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# Reference solutions
# --------------------------------------------------------------------------------------------


class ReferenceAccuracyError(RuntimeError):
    """Halving the steps of a reference solve changed the result by more than the tolerance."""


def reference_grid(path: VPDiscrete, steps: int, t_start: float | None = None, t_end: float = 0.0) -> Grid:
    """``steps - 1`` steps uniform in lambda from ``t_start`` (default the noise end) to ``t_end``
    (default 0, the first training time), then the step to t = -1 (sigma = 0), which every method
    takes as the exact-at-the-limit DDIM step ``x = x0_hat(x, t_end)``."""
    t_start = path.t_max if t_start is None else t_start
    body = _grids.uniform_lambda(path, steps - 1, t_start=t_start, t_end=t_end).t
    return Grid(path, torch.cat([body, torch.tensor([path.t_min], dtype=torch.float64)]))


def reference(model: Model, x_T: Tensor, *, steps: int = 256, method: str = "dpm-solver-3", tol: float = 1e-3,
              t_start: float | None = None, return_error: bool = False):
    """A high-accuracy solution of the probability-flow ODE of ``model`` from ``x_T`` (the state at
    ``t_start``, default the noise end) to sigma = 0, by a fine-step high-order odesolve method.

    The ODE is solved in float64 state (the network runs in its own dtype) on :func:`reference_grid`
    with ``steps`` steps of ``method`` (default DPM-Solver-3, third order: 3 (steps - 1) + 1 model
    calls), and again with ``steps // 2`` steps. The largest difference between the two, over all
    entries, must be below ``tol`` (in the data's units; ``digits`` has grey levels 0.125 apart),
    else :class:`ReferenceAccuracyError` is raised. For a third-order method the error of the fine
    solve is about 1/8 of that difference. The end point is ``x0_hat`` at ``t = 0``
    (sigma = 0.01 for ``digits``): the network was not trained closer to the data.

    Returns the solution in ``x_T``'s dtype, with ``return_error`` also the difference (a float).
    """
    if steps < 4:
        raise ValueError(f"steps must be at least 4, got {steps}")
    x = x_T.to(torch.float64)
    with torch.inference_mode():
        fine = _sample(model, x, reference_grid(model.path, steps, t_start), method=method)
        coarse = _sample(model, x, reference_grid(model.path, steps // 2, t_start), method=method)
    err = float((fine - coarse).abs().max())
    if not err < tol:
        raise ReferenceAccuracyError(f"reference: {method} with {steps} and {steps // 2} steps differ by {err:.3g} "
                                     f">= tol = {tol:g}; raise steps")
    out = fine.to(x_T.dtype)
    return (out, err) if return_error else out


# --------------------------------------------------------------------------------------------
# A classifier of the digits, and the Frechet distance of its features
# --------------------------------------------------------------------------------------------


class DigitsClassifier(nn.Module):
    """An MLP 64 -> hidden -> hidden -> 10 on the flattened 8x8 images in [-1, 1].
    ``features(x)`` is the second hidden layer (after its ReLU), the space of the Frechet distance."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.to(torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def probabilities(self, x: Tensor) -> Tensor:
        return torch.softmax(self(x), dim=1)


def digits_classifier(seed: int = 0, train_fraction: float = 0.75, epochs: int = 60,
                      noise: float = 0.1) -> tuple[DigitsClassifier, Tensor, Tensor]:
    """Train :class:`DigitsClassifier` on a seeded random ``train_fraction`` of the digits (Adam,
    mini-batches of 128, ``epochs`` epochs, inputs jittered by Gaussian noise of std ``noise``;
    about 3 s of one CPU core; 98 % test accuracy). Returns ``(classifier, train_index, test_index)``."""
    with torch.inference_mode(False), torch.enable_grad():  # callable from inside inference_mode
        return _train_classifier(seed, train_fraction, epochs, noise)


def _train_classifier(seed, train_fraction, epochs, noise):
    g = torch.Generator().manual_seed(seed)
    x, y = data("digits"), labels("digits")
    perm = torch.randperm(x.shape[0], generator=g)
    n_train = round(train_fraction * x.shape[0])
    tr, te = perm[:n_train], perm[n_train:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = DigitsClassifier()
    opt = torch.optim.Adam(clf.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(epochs):
        order = tr[torch.randperm(tr.numel(), generator=g)]
        for i in range(0, order.numel(), 128):
            idx = order[i:i + 128]
            xb = x[idx] + noise * torch.randn(x[idx].shape, generator=g)
            loss = F.cross_entropy(clf(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    clf.eval().requires_grad_(False)
    return clf, tr, te


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a`` and ``b`` (FID's formula,
    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)``), in float64."""
    a, b = (v.detach().to(torch.float64).flatten(1).cpu() for v in (a, b))
    if a.shape[1] != b.shape[1] or a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"a and b must be (n, d) feature sets with n >= 2 and equal d; got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    mu = a.mean(0) - b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    ea, va = torch.linalg.eigh(ca)
    sa = (va * ea.clamp(min=0).sqrt()) @ va.T  # C_a^1/2
    m = sa @ cb @ sa
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    return float(mu @ mu + torch.trace(ca) + torch.trace(cb) - 2 * tr_sqrt)
