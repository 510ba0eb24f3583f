"""Interop with other libraries (optional dependencies, imported only when you import the submodule).

- [`odesolve.adapters.diffusers`][odesolve.adapters.diffusers]: a diffusers network as an
  [`odesolve.Model`][odesolve.models.Model]
  ([`model_from_diffusers`][odesolve.adapters.diffusers.model.model_from_diffusers]), the path and prediction type of a
  scheduler config, and [`OdesolveScheduler`][odesolve.adapters.diffusers.scheduler.OdesolveScheduler], a diffusers
  scheduler backed by a compiled plan (``pipe.scheduler = OdesolveScheduler.from_config(...)``);
  a package with one module per concern (config, families, timesteps, grids, model, scheduler).
- [`odesolve.adapters.kdiffusion`][odesolve.adapters.kdiffusion]: k-diffusion style functions ``sample_<name>(model, x,
  sigmas, extra_args=None, callback=None, disable=None)`` for every registered method, generated from the
  registry.

Neither is imported by ``import odesolve``; ``diffusers`` is needed only by the first.
"""

__all__ = ["diffusers", "kdiffusion"]
