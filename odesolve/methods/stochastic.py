"""Stochastic samplers: discretisations of the reverse SDE, as plan rows with noise.

With the exact score the reverse SDE of a path x_t = alpha_t x0 + sigma_t eps,

    dx = [f x - g^2 grad log p_t(x)] dt + g dW,   f = d log alpha/dt,   g^2 = -2 sigma^2 d lambda/dt,

run from noise towards data keeps the marginal p_t at every time (Anderson 1982; Song et al., ICLR
2021). Its noise is additive (g does not depend on x), so Euler-Maruyama has strong order 1 here,
not 1/2. Every table below makes one model call per step, keeps x0 in the buffer, and adds
``c_n xi_n`` with ``xi_n`` the normalised Brownian increment over the step ``[t_n, t_{n+1}]`` (path
time): driven by one Brownian path, the same seed follows the same path on any grid.

A stochastic table declares ``stochastic = True``, ``strong_order`` and ``weak_order`` (its
``order`` is the weak order); tests/sde measures both on the exact Gaussian toy. A sampler that
does not converge to the exact law under refinement declares ``weak_order = 0`` (and ``order = 1``,
the least order a table can have).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..paths import check_real
from ..plan import Rows
from .base import Method, refuse_alpha_zero_start, table


@table
class _Stochastic(Method):
    """What the stochastic tables share: the declared orders and the ``eta`` option."""

    strong_order: float = 1.0
    weak_order: int = 1
    eta: float = 1.0
    stochastic: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if self.weak_order != self.order and not (self.weak_order == 0 and self.order == 1):
            raise ValueError(f"{self.name}: order must be the weak order {self.weak_order}, got {self.order}")
        check_real(self.strong_order, "strong_order", 0.0, lo_open=self.weak_order != 0)
        object.__setattr__(self, "eta", check_real(self.eta, "eta", 0.0))

    def _option_eta(self, eta) -> float:
        return self.eta if eta is None else check_real(eta, "eta", 0.0)


@table
class ExponentialSDE(_Stochastic):
    """Exponential (in lambda) one-call-per-step SDE steps with x0 in the buffer; ``h = lambda_{n+1} - lambda_n``.

    ``noise="ancestral"`` (``nodes = 1``): DDIM with eta (Song, Meng & Ermon, ICLR 2021, eq. 16)
    written for any path, ``u = min(1, eta sqrt(1 - e^{-2h}))``:

        x_{n+1} = sigma_{n+1}/sigma_n sqrt(1 - u^2) x_n + alpha_{n+1} (1 - e^{-h} sqrt(1 - u^2)) D_n + sigma_{n+1} u xi.

    eta = 0 is DDIM, eta = 1 DDPM ancestral sampling (Ho et al. 2020), which is also exponential
    Euler-Maruyama = DPM-Solver++(1) SDE (Lu et al. 2022, eq. 13):
    ``x_{n+1} = sigma_{n+1}/sigma_n e^{-h} x_n + alpha_{n+1} (1 - e^{-2h}) D_n + sigma_{n+1} sqrt(1 - e^{-2h}) xi``,
    and Euler ancestral (Karras et al. 2022's Euler step to sigma_down plus sigma_up noise, in
    x/alpha) for every eta: its sigma_up/sigma_{n+1} is u and its sigma_down/sigma_n is e^{-h} sqrt(1 - u^2).

    ``noise="exponential"`` (the DPM-Solver++ SDE convention of eta, ``z = (1 + eta) h``):

        x_{n+1} = sigma_{n+1}/sigma_n e^{-eta h} x_n + alpha_{n+1} (1 - e^{-z}) D_n + [2M]
                  + sigma_{n+1} sqrt(1 - e^{-2 eta h}) xi,

    and with ``nodes = 2`` (DPM-Solver++(2M) SDE, Lu et al. 2022) the term [2M] adds the slope of
    the last two outputs, ``w (h_n / h_{n-1}) (D_n - D_{n-1})`` with ``w = (1 - e^{-z}) / 2``
    ("midpoint") or ``w = 1 - (1 - e^{-z}) / z`` ("heun": the exact weight of the linear
    interpolant). Steps of infinite length (to sigma = 0, from alpha = 0) take the one-node update.

    ``prediction="eps"`` (``nodes = 1``, eta = 1): SDE-DPM-Solver-1 (Lu et al. 2022, DPM-Solver++,
    eq. 13 in noise form), exponential Euler-Maruyama with eps held constant over the step:

        x_{n+1} = alpha_{n+1}/alpha_n x_n - 2 sigma_{n+1} (e^h - 1) eps_n + sigma_{n+1} sqrt(e^{2h} - 1) xi.

    Its step to sigma = 0 keeps noise, ``alpha_N rho_{N-1} xi`` (it does not end on a denoised sample).
    """

    nodes: int = 1
    noise: str = "ancestral"  # the eta convention: "ancestral" (DDIM, Euler ancestral) or "exponential"
    variant: str = "midpoint"
    options = ("eta",)

    def __post_init__(self):
        super().__post_init__()
        if self.noise not in ("ancestral", "exponential"):
            raise ValueError(f"{self.name}: noise must be 'ancestral' or 'exponential', got {self.noise!r}")
        if self.nodes not in (1, 2) or (self.nodes == 2 and self.noise != "exponential"):
            raise ValueError(f"{self.name}: nodes must be 1, or 2 with noise='exponential', got {self.nodes!r}")
        if self.variant not in ("midpoint", "heun"):
            raise ValueError(f"{self.name}: variant must be 'midpoint' or 'heun', got {self.variant!r}")
        if self.prediction == "eps" and (self.nodes != 1 or self.noise != "ancestral" or self.eta != 1):
            raise ValueError(f"{self.name}: the noise form (prediction='eps') is the one-node step with eta = 1")

    @property
    def history(self) -> int:
        return self.nodes - 1

    def _rows(self, g, eta=None) -> Rows:
        eta = self._option_eta(eta)
        if self.prediction == "eps":
            return self._noise_form_rows(g, eta)
        N = g.steps
        n = torch.arange(N)
        h = g.h
        finite = torch.isfinite(h)
        hf = torch.where(finite, h, torch.ones_like(h))
        ls0, ls1, la1 = g.log_sigma[:-1], g.log_sigma[1:], g.log_alpha[1:]
        one = torch.ones_like(h)
        if self.noise == "ancestral":
            q2 = torch.where(finite, -torch.expm1(-2 * hf), one)  # 1 - e^{-2h}
            u = torch.clamp(eta * torch.sqrt(q2), max=1.0)
            keep = torch.sqrt((1 - u) * (1 + u))  # sqrt(1 - u^2)
            state = torch.exp(ls1 - ls0) * keep
            decay = torch.where(finite, torch.exp(-hf), torch.zeros_like(h)) * keep  # e^{-h} sqrt(1 - u^2)
            w0 = torch.exp(la1) * (1 - decay)
            c = torch.exp(ls1) * u
        else:
            eh = torch.where(finite, eta * hf, torch.where(torch.full_like(h, eta) == 0, 0.0, torch.inf))
            z = torch.where(finite, hf + eh, torch.full_like(h, torch.inf))
            state = torch.exp(ls1 - ls0 - eh)
            w0 = torch.exp(la1) * -torch.expm1(-z)
            c = torch.exp(ls1) * torch.sqrt(-torch.expm1(-2 * eh))
        rows = Rows(N)
        rows.call(n, n, g.t[:-1])
        rows.update_state(n, state)
        rows.update(n, n, w0)
        if self.nodes == 2:  # the slope term where this step and the one before have finite length
            two = torch.zeros(N, dtype=torch.bool)
            two[1:] = finite[1:] & finite[:-1]
            m = n[two]
            z = hf[m] * (1 + eta)
            em = -torch.expm1(-z)
            w = 0.5 * em if self.variant == "midpoint" else 1 - em / z
            slope = torch.exp(la1[m]) * w * hf[m] / hf[m - 1]
            rows.update(m, m, slope)
            rows.update(m, m - 1, -slope)
        rows.noise(n, c, g.t[:-1], g.t[1:])
        return rows

    def _noise_form_rows(self, g, eta: float) -> Rows:
        refuse_alpha_zero_start(self, g)
        if eta != 1:
            raise ValueError(f"eta: {self.name!r} (the noise form) is defined for eta = 1, got {eta}")
        n = torch.arange(g.steps)
        h = g.h
        finite = torch.isfinite(h)
        hf = torch.where(finite, h, torch.ones_like(h))
        la0, la1, ls0, ls1 = g.log_alpha[:-1], g.log_alpha[1:], g.log_sigma[:-1], g.log_sigma[1:]
        s1, big = torch.exp(ls1), torch.exp(la1 + ls0 - la0)  # sigma_{n+1}, sigma_{n+1} e^h = alpha_{n+1} rho_n
        rows = Rows(g.steps)
        rows.call(n, n, g.t[:-1])
        rows.update_state(n, torch.exp(la1 - la0))
        rows.update(n, n, torch.where(finite, -2 * s1 * torch.expm1(hf), -2 * (big - s1)))
        rows.noise(
            n,
            torch.where(finite, s1 * torch.sqrt(torch.expm1(2 * hf)), torch.sqrt((big - s1) * (big + s1))),
            g.t[:-1],
            g.t[1:],
        )
        return rows


@table
class EulerMaruyama(_Stochastic):
    """Euler-Maruyama (Maruyama 1955) on the reverse SDE in the path's own time (Song et al., ICLR
    2021: the reverse diffusion of the VP and VE SDEs), score from the buffer's x0
    ``grad log p = (alpha D - x) / sigma^2``, with ``dt = t_{n+1} - t_n < 0``:

        x_{n+1} = x_n + dt [(f + g^2/sigma^2) x_n - g^2 alpha/sigma^2 D_n] + g sqrt(|dt|) xi,   f, g at t_n.

    f and g come from the path by automatic differentiation (the coefficients do not carry
    gradients to the grid). Undefined at an alpha = 0 start (f = -inf there): refused.

    Option ``diffusion``: the SDE with the same marginals and any diffusion ``eps(t) >= 0`` per unit of
    path time (Albergo, Boffi & Vanden-Eijnden 2023, "Stochastic Interpolants", the SDE with drift
    ``b + eps s``), ``dx = [u - eps grad log p] dt + sqrt(2 eps) dW`` with ``u = f x - g^2/2 grad log p``
    the probability-flow velocity:

        x_{n+1} = x_n + dt [alpha' D_n + (sigma'/sigma + eps/sigma^2)(x_n - alpha D_n)] + sqrt(2 eps |dt|) xi,

    at ``t_n``. ``None`` (default) is ``eps = g^2/2``, the reverse SDE above (infinite where alpha = 0,
    hence refused there); ``0`` is Euler on the probability-flow ODE; a number is a constant ``eps``; a
    callable ``eps(t)`` takes the float64 times ``t_n`` and returns values >= 0 of their shape."""

    diffusion: object = None
    variable = "t"
    options = ("diffusion",)

    def __post_init__(self):
        super().__post_init__()
        if self.diffusion is not None and not callable(self.diffusion):
            object.__setattr__(self, "diffusion", check_real(self.diffusion, "diffusion", 0.0))

    def _diffusion_over_sigma2(self, diffusion, g, t0: torch.Tensor) -> torch.Tensor:
        """``eps(t_n) / sigma_n^2``, checked."""
        if callable(diffusion):
            eps = torch.as_tensor(diffusion(t0.detach().clone()), dtype=torch.float64)
            if eps.shape != t0.shape and eps.numel() != 1:
                raise ValueError(
                    f"diffusion(t) must return values of the shape of t {tuple(t0.shape)}, got {tuple(eps.shape)}"
                )
            eps = eps.expand(t0.shape)
            bad = ~(torch.isfinite(eps) & (eps >= 0))
            if bool(bad.any()):
                raise ValueError(
                    f"diffusion(t) must be finite and >= 0, got {eps[bad][:4].tolist()} at t = {t0[bad][:4].tolist()}"
                )
        else:
            eps = torch.full_like(t0, check_real(diffusion, "diffusion", 0.0))
        return eps.detach() / torch.exp(2 * g.log_sigma[:-1])

    def _rows(self, g, diffusion=None) -> Rows:
        diffusion = self.diffusion if diffusion is None else diffusion
        if diffusion is not None:
            return self._adjusted_rows(g, diffusion)
        if g.alpha_zero_start:
            raise ValueError(
                f"grid starts at alpha = 0 (zero terminal SNR), where {self.name!r} is undefined "
                "(d log alpha/dt is infinite); use 'ddpm' or 'dpmpp-2m-sde', or a finite diffusion= option"
            )
        t0 = g.t[:-1].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            la, lam = g.path.log_alpha(t0), g.path.lambda_(t0)
            f, dlam = (
                torch.autograd.grad(v.sum(), t0, retain_graph=True, materialize_grads=True)[0]
                if v.requires_grad
                else torch.zeros_like(t0)
                for v in (la, lam)
            )
        g2_s2 = -2 * dlam  # g^2 / sigma^2
        dt = g.t[1:] - g.t[:-1]
        sigma0 = torch.exp(g.log_sigma[:-1])
        N = g.steps
        n = torch.arange(N)
        rows = Rows(N)
        rows.call(n, n, g.t[:-1])
        rows.update_state(n, 1 + dt * (f + g2_s2))
        rows.update(n, n, -dt * g2_s2 * torch.exp(g.log_alpha[:-1]))
        rows.noise(n, sigma0 * torch.sqrt(g2_s2 * dt.abs()), g.t[:-1], g.t[1:])
        return rows

    def _adjusted_rows(self, g, diffusion) -> Rows:
        """The same step with a chosen ``eps``, written with ``d alpha/dt`` and ``d sigma/dt`` (finite where
        alpha = 0, so an alpha = 0 start is allowed): the velocity is ``u = alpha' D + sigma'/sigma (x - alpha D)``
        and the score ``(alpha D - x)/sigma^2``."""
        t0 = g.t[:-1].detach()
        da, ds = (v.detach() for v in g.path.derivatives(t0))
        a0, s0 = torch.exp(g.log_alpha[:-1]), torch.exp(g.log_sigma[:-1])
        e_s2 = self._diffusion_over_sigma2(diffusion, g, t0)  # eps / sigma^2
        c = ds / s0 + e_s2
        dt = g.t[1:] - g.t[:-1]
        N = g.steps
        n = torch.arange(N)
        rows = Rows(N)
        rows.call(n, n, g.t[:-1])
        rows.update_state(n, 1 + dt * c)
        rows.update(n, n, dt * (da - a0 * c))
        rows.noise(n, s0 * torch.sqrt(2 * e_s2 * dt.abs()), g.t[:-1], g.t[1:])
        return rows


@table
class LangevinPC(_Stochastic):
    """The predictor-corrector sampler of Song et al. (Score-SDE, ICLR 2021, Alg. 2 and 3): at each
    grid time t_n a Langevin corrector step, then the reverse-diffusion predictor to t_{n+1}. With
    the forward step from t_{n+1} to t_n written ``x_n = a x_{n+1} + G z`` (``a = alpha_n/alpha_{n+1}``,
    ``G^2 = sigma_n^2 - a^2 sigma_{n+1}^2``: VE's ``sigma_n^2 - sigma_{n+1}^2``, VP's ``beta_n``) and the
    score ``s = (alpha D - x)/sigma^2``:

        corrector  x <- x + eps s(x, t_n) + sqrt(2 eps) z,   eps = 2 a^2 (snr sigma_n)^2,
        predictor  x_{n+1} = (2 - a) x + G^2 s(x, t_n) + G xi.

    The paper's step size is ``eps = 2 alpha_i (snr ||z|| / ||s||)^2`` with norms averaged over the
    batch (sample i then depends on the others); here ``||z|| / ||s||`` takes its value for
    noise-dominated inputs, ``sigma_n`` (``||z|| ~ sqrt(d)``, ``||s|| ~ sqrt(d)/sigma``), so each sample
    depends on its own noise only. A step to sigma = 0 returns the predictor's mean (the paper's
    final denoising). Undefined at an alpha = 0 start (a = 0): refused.

    Order: the corrector's step does not shrink with the grid, so N steps make N Langevin steps of a
    fixed size, whose bias (relative variance error ``snr^2 sigma^2 / Var_t`` on a Gaussian) does not
    vanish under refinement: the sampler does not converge to the exact law (weak and strong order
    0, declared as such; the error floor is measured in tests/sde). The predictor alone is the
    reverse diffusion's Euler step (order 1)."""

    snr: float = 0.16
    variable = "t"
    options = ("snr",)

    @property
    def calls_per_step(self) -> int:
        return 2

    def _rows(self, g, snr=None) -> Rows:
        snr = self.snr if snr is None else check_real(snr, "snr", 0.0)
        if g.alpha_zero_start:
            raise ValueError(
                f"grid starts at alpha = 0 (zero terminal SNR), where {self.name!r} is undefined (its "
                "predictor divides by alpha); use 'ddpm' or 'dpmpp-2m-sde'"
            )
        N = g.steps
        n = torch.arange(N)
        la0, la1, ls0, ls1 = g.log_alpha[:-1], g.log_alpha[1:], g.log_sigma[:-1], g.log_sigma[1:]
        a = torch.exp(la0 - la1)
        s0 = torch.exp(ls0)
        G2 = s0**2 - torch.exp(2 * (la0 - la1 + ls1))  # sigma_n^2 - a^2 sigma_{n+1}^2
        e = 2 * a**2 * snr**2  # eps / sigma_n^2
        rows = Rows(2 * N)
        rows.call(2 * n, n, g.t[:-1])
        rows.call(2 * n + 1, n, g.t[:-1])
        rows.update_state(2 * n, 1 - e)
        rows.update(2 * n, 2 * n, e * torch.exp(la0))
        rows.update_state(2 * n + 1, 2 - a - G2 / s0**2)
        rows.update(2 * n + 1, 2 * n + 1, G2 / s0**2 * torch.exp(la0))
        if snr > 0:
            rows.noise(2 * n, torch.sqrt(2 * e) * s0)  # an independent normal: Langevin's own noise
        rows.noise(2 * n + 1, torch.where(g.sigma_zero_end, torch.zeros_like(G2), torch.sqrt(G2)), g.t[:-1], g.t[1:])
        return rows


DDPM = ExponentialSDE(
    "ddpm",
    order=1,
    strong_order=1.0,
    weak_order=1,
    nodes=1,
    noise="ancestral",
    paper="Ho et al., DDPM, NeurIPS 2020; DDIM with eta (Song et al., ICLR 2021, eq. 16); "
    "= DPM-Solver++(1) SDE (Lu et al. 2022) and Euler ancestral (Karras et al. 2022)",
)
# The 2M SDE steps: weak order 2 measured (tests/sde, exact laws on the Gaussian toy), strong order 1
DPMPP_2M_SDE = ExponentialSDE(
    "dpmpp-2m-sde",
    order=2,
    strong_order=1.0,
    weak_order=2,
    nodes=2,
    noise="exponential",
    variant="midpoint",
    paper="Lu et al., DPM-Solver++, 2022: 2M with the SDE step (midpoint)",
)
DPMPP_2M_SDE_HEUN = ExponentialSDE(
    "dpmpp-2m-sde-heun",
    order=2,
    strong_order=1.0,
    weak_order=2,
    nodes=2,
    noise="exponential",
    variant="heun",
    paper="Lu et al., DPM-Solver++, 2022: 2M with the SDE step (exact linear weight)",
)
SDE_DPM_SOLVER_1 = ExponentialSDE(
    "sde-dpm-solver-1",
    order=1,
    strong_order=1.0,
    weak_order=1,
    prediction="eps",
    paper="Lu et al., DPM-Solver++, 2022, eq. 13 (SDE-DPM-Solver-1, noise form)",
)
EULER_MARUYAMA = EulerMaruyama(
    "euler-maruyama",
    order=1,
    strong_order=1.0,
    weak_order=1,
    paper="Song et al., Score-SDE, ICLR 2021 (reverse diffusion); Maruyama 1955",
)

SCORE_SDE_PC = LangevinPC(
    "score-sde-pc",
    order=1,
    strong_order=0.0,
    weak_order=0,
    paper="Song et al., Score-SDE, ICLR 2021, Alg. 2-3 (reverse diffusion + Langevin, snr = 0.16); "
    "does not converge under refinement (weak order 0)",
)

TABLES = [DDPM, DPMPP_2M_SDE, DPMPP_2M_SDE_HEUN, SDE_DPM_SOLVER_1, EULER_MARUYAMA, SCORE_SDE_PC]
# Euler ancestral is DDIM with eta for every eta (see ExponentialSDE): the same table under its name
ALIASED = [
    (
        ExponentialSDE(
            "euler-ancestral",
            order=1,
            strong_order=1.0,
            weak_order=1,
            nodes=1,
            noise="ancestral",
            paper="Karras et al., EDM, 2022 (k-diffusion's Euler ancestral)",
        ),
        "ddpm",
    )
]
