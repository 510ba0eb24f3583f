"""Oracle tests: odesolve against diffusers' schedulers, k-diffusion's samplers and the papers' formulas."""
