import sys; sys.path.insert(0, "tests/adapters")
import torch
from test_kdiffusion import SIGMAS, denoiser, kdiffusion_oracle
from _adapters_lib import rel
from test_kdiffusion_samplers import keyed_noise
import odesolve as ods
from odesolve.methods.ancestral import AncestralStages
from odesolve.adapters import kdiffusion as kd
from odesolve.adapters.kdiffusion.noise import NoiseSamplerSource
K = kdiffusion_oracle()
x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 60
for r in (0.5, 1/3):
  T = AncestralStages("dpmpp-sde", order=1, r=r, paper="t")
  for eta, sn in ((1.0, 1.0), (0.6, 0.8)):
    ns = keyed_noise(x.shape)
    a = K.sample_dpmpp_sde(denoiser, x, SIGMAS, disable=True, eta=eta, s_noise=sn, r=r, noise_sampler=ns)
    src = NoiseSamplerSource(ns, 3, sn)
    b = kd.run(T, denoiser, x, SIGMAS, options={"eta": eta}, noise=src)
    tree = K.BrownianTreeNoiseSampler(x, SIGMAS[SIGMAS > 0].min(), SIGMAS.max(), seed=11)
    a2 = K.sample_dpmpp_sde(denoiser, x, SIGMAS, disable=True, eta=eta, s_noise=sn, r=r, noise_sampler=tree)
    b2 = kd.run(T, denoiser, x, SIGMAS, options={"eta": eta}, noise=NoiseSamplerSource(tree, 3, sn))
    print(r, eta, rel(a, b), rel(a2, b2))
