import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Site:
    dir: Path
    log: str
    returncode: int
    seconds: dict  # page source path -> seconds its code blocks took (markdown-exec, measured by docs/hooks)

    def html(self, page: str) -> str:
        """The built HTML of ``page`` (a docs source path such as "tables.md")."""
        stem = page.removesuffix(".md")
        return (self.dir / ("index.html" if stem == "index" else f"{stem}/index.html")).read_text()


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Site:
    """One strict ``mkdocs build`` of the site per test run: it executes every ``exec="on"`` block of the docs."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("markdown_exec")
    pytest.importorskip("matplotlib")
    out_dir = tmp_path_factory.mktemp("site")
    timings = out_dir / "timings.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", ODESOLVE_DOCS_TIMINGS=str(timings), NO_MKDOCS_2_WARNING="1")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out_dir / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = json.loads(timings.read_text()) if timings.exists() else {}
    return Site(out_dir / "site", out.stdout + out.stderr, out.returncode, seconds)
