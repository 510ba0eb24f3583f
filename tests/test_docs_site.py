import shutil
from pathlib import Path

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
