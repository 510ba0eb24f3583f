"""Small pretrained networks shipped with odesolve, for trying methods on a real (learned) model.

    from odesolve.toy import zoo
    model = zoo.load("digits")              # odesolve.Model; model.fn is a ZooDenoiser
    model.fn.network                        # the bare nn.Module (compile it, hook it, ...)
    images = zoo.data("digits")             # the training images, (1797, 1, 8, 8) in [-1, 1]
    zoo.config("digits")["net"]["shape"]    # (1, 8, 8): what the checkpoint was trained with

``digits`` is a compact residual MLP denoiser (eps-prediction) trained on scikit-learn's 8x8
handwritten digits (1797 images, 17 grey levels, scaled to [-1, 1]) on the DDPM linear-beta path
``VPDiscrete.from_schedule("linear", 1000)``; time is the timestep index, continuous in
``[-1, 999]`` (the network was trained at continuous times in ``[0, 999]`` and is conditioned on
the half log-SNR ``lambda(t)``, which keeps its probability-flow ODE smooth). It was trained by
``scripts/train_digits.py``; the weights, the training images and their labels are package data
(``odesolve/toy/weights/digits.pt``). See ``docs/digits.md``.

This module holds the networks and their checkpoints only. What the tests and the docs measure
them with lives with the other metrics and references: the digits classifier and the Frechet
distance in [`odesolve.toy.metrics`][odesolve.toy.metrics], the step-halving reference solution in
[`odesolve.toy.reference`][odesolve.toy.reference] ([`solve_by_halving`][odesolve.toy.reference.solve_by_halving]).
"""

from __future__ import annotations

import copy
import functools
import math
from importlib import resources

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..models import Model
from ..paths import VPDiscrete

__all__ = [
    "DigitsNet",
    "LambdaOfTime",
    "ZooDenoiser",
    "config",
    "data",
    "labels",
    "load",
    "names",
    "network",
    "noise_embedding",
    "path_from_config",
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
        raise FileNotFoundError(
            f"the weights of model {name!r} ({_FILES[name]}) are missing from the odesolve "
            f"package data; rebuild them with scripts/train_{name}.py"
        )
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
    """``lambda(t)`` of a [`VPDiscrete`][odesolve.paths.VPDiscrete] path on any device, from a table of ``log alpha``
    at the
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
    each sample's noise level ([`noise_embedding`][odesolve.toy.zoo.noise_embedding]); it runs in the dtype of its
    parameters.
    """

    def __init__(
        self, shape: tuple[int, ...] | list[int] = (1, 8, 8), hidden: int = 384, depth: int = 4, emb: int = 128
    ):
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


class ZooDenoiser(nn.Module):
    """The function ``fn(x, t)`` of a zoo [`Model`][odesolve.models.Model]: the network ``network`` evaluated
    at the half log-SNR ``lambda(t)`` of the time ``t`` on ``path`` ([`LambdaOfTime`][odesolve.toy.zoo.LambdaOfTime]).

    ``network`` is the bare ``nn.Module`` (for ``torch.compile``, hooks, counting parameters);
    ``name`` the zoo name. ``x`` is cast to the network's dtype and the output returned in it."""

    def __init__(self, name: str, network: nn.Module, path: VPDiscrete):
        super().__init__()
        self.name = name
        self.network = network
        self.lambda_of_t = LambdaOfTime(path)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.network(x, self.lambda_of_t(t))


def config(name: str = "digits") -> dict:
    """The training configuration stored with the checkpoint of ``name`` (a copy): ``net`` (the
    [`DigitsNet`][odesolve.toy.zoo.DigitsNet] arguments, ``shape`` among them), ``path`` (the diffusers schedule
    arguments),
    ``prediction``."""
    return copy.deepcopy(_checkpoint(_check_name(name))["config"])


def load(name: str = "digits", device=None, dtype: torch.dtype | None = None) -> Model:
    """The zoo model ``name`` as an [`odesolve.Model`][odesolve.models.Model] on ``device`` with parameters in ``dtype``
    (default float32; bfloat16 and float16 work too, the state is then kept in float32 by the executor).

    ``model.fn`` is a [`ZooDenoiser`][odesolve.toy.zoo.ZooDenoiser]; ``model.fn.network`` the bare network. Times are
    embedded in float32. Wrap calls in ``torch.inference_mode()`` when no gradients are needed.
    """
    ck = _checkpoint(_check_name(name))
    return Model(
        ZooDenoiser(name, network(name, device, dtype), _path(name)),
        path=_path(name),
        prediction=ck["config"]["prediction"],
    )


def data(name: str = "digits", device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The training images of ``name`` in the network's coordinates: for ``digits`` a
    ``(1797, 1, 8, 8)`` tensor with the 17 grey levels 0..16 mapped to ``x / 8 - 1`` in [-1, 1]."""
    ck = _checkpoint(_check_name(name))
    return (ck["data"].to(torch.float32) / 8.0 - 1.0).unsqueeze(1).to(device=device, dtype=dtype)


def labels(name: str = "digits", device=None) -> Tensor:
    """The class labels (int64) of [`data`][odesolve.toy.zoo.data]."""
    return _checkpoint(_check_name(name))["labels"].to(device=device, dtype=torch.int64)
