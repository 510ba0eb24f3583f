"""Benchmarks of odesolve against diffusers and k-diffusion: accuracy against NFE on exact problems,
per-step overhead against the memory-traffic floor, and the extra memory a sampling run holds.

Run everything with ``python -m benchmarks.run --out benchmarks/results`` (see benchmarks/README.md).
"""
