import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_quickstart_runs():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quickstart")[1].split("```python")[1].split("```")[0]
    exec(compile(block, "README quickstart", "exec"), {})


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = readme.split("```bash")[1].split("```")[0].strip().splitlines()[1].split("&& ")[-1]
    assert command in ci and "pip install torch==2.13.0" in ci and 'pip install -e ".[test,docs]"' in ci
    test_line = readme.split("```bash")[1].split("```")[0].strip().splitlines()[1]
    kd = test_line.split("&& ")[-2].strip()
    assert kd.startswith("pip install --no-deps k-diffusion") and kd in ci  # the k-diffusion oracle runs in CI
    assert shutil.which("bash")
    # the main job writes figures: its install line must bring matplotlib (the plot extra)
    main_job = readme.split("```bash")[1].split("```")[0].strip().splitlines()[0]
    assert '".[plot]"' in main_job and main_job.endswith("odesolve report")


def _readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text().split("## Quickstart")[1].split("\n## ")[0]
    return [block.split("```")[0] for block in text.split("```python")[1:]]


def test_readme_shows_what_its_quickstart_prints(capsys):
    quickstart = _readme_python_blocks()[0]
    exec(compile(quickstart, "README quickstart", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    shown = (ROOT / "README.md").read_text().split("```text")[1].split("```")[0].strip().splitlines()
    assert printed[:5] == shown[:5]  # the three samplers' errors, the plan's header and column names


def test_readme_diffusers_line_swaps_the_scheduler_of_a_pipeline():
    diffusers = pytest.importorskip("diffusers")
    import torch

    from odesolve.adapters.diffusers import OdesolveScheduler

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    namespace = {"pipe": pipe}
    exec(compile(_readme_python_blocks()[1], "README diffusers", "exec"), namespace)
    assert isinstance(pipe.scheduler, OdesolveScheduler) and pipe.scheduler.config.method == "unipc-bh2-3"
    with torch.inference_mode():
        images = pipe(batch_size=1, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np")
    assert images.images.shape == (1, 8, 8, 3)


def test_readme_kdiffusion_snippet_samples_like_odesolve():
    import torch

    import odesolve as ods

    torch.manual_seed(0)
    namespace = {}
    exec(compile(_readme_python_blocks()[2], "README k-diffusion", "exec"), namespace)
    torch.manual_seed(0)
    x_T = 80.0 * torch.randn(4, 2)
    model = ods.Model(lambda x, t: x / (1 + t[:, None] ** 2), ods.paths.EDM(), "x0")
    expected = ods.sample(model, x_T, ods.grids.karras(ods.paths.EDM(), steps=10), method="dpmpp-3m-corrected")
    assert torch.allclose(namespace["x0"], expected, atol=1e-5)
