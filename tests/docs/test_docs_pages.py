"""The built site: it builds in strict mode (which runs every ``exec="on"`` block and resolves every cross-reference),
and every page renders its formulas, has no raw Sphinx role, and runs its code in time; every lesson of the course
has a figure drawn by its own code and exercises whose solutions ran."""

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
SECONDS_PER_PAGE = 20.0  # CPU seconds of a page's code blocks (measured by docs/hooks/execution.py)


def _nav_pages(entries, section=""):
    for entry in entries:
        for title, value in entry.items() if isinstance(entry, dict) else [("", entry)]:
            if isinstance(value, list):
                yield from _nav_pages(value, title)
            else:
                yield section, value


NAV = list(_nav_pages(yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)["nav"]))
PAGES = [page for _, page in NAV]
LESSONS = [page for section, page in NAV if section == "Course"]


def _visible_text(html: str) -> str:
    """The page's HTML without code, formulas (arithmatex spans), figures and scripts."""
    for tag in ("script", "pre", "code", "svg", "style"):
        html = re.sub(rf"<{tag}\b.*?</{tag}>", " ", html, flags=re.S)
    html = re.sub(r'<(span|div) class="arithmatex">.*?</\1>', " ", html, flags=re.S)
    return html


def test_site_builds_in_strict_mode(site):
    assert site.returncode == 0, site.log[-6000:]
    assert (site.dir / "index.html").exists() and (site.dir / "tables" / "index.html").exists()


@pytest.mark.parametrize("page", PAGES)
def test_page_has_no_raw_role_or_dangling_reference(site, page):
    assert site.returncode == 0, site.log[-3000:]
    html = site.html(page)
    roles = re.findall(r":(?:func|class|meth|mod|attr|data|exc|obj|ref):(?:`|<code>)", html)
    assert not roles, f"{page}: Sphinx roles are not rendered: {roles[:5]}"
    unresolved = re.findall(r"\]\[[\w.]+\]", _visible_text(html))
    assert not unresolved, f"{page}: unresolved cross-references {unresolved[:5]}"
    outside = [f"{name}.md" for name in ("THEORY", "DESIGN", "STYLE")]  # design notes that are not in the repository
    assert not any(name in html for name in outside), f"{page} cites a file outside the repository"


@pytest.mark.parametrize("page", PAGES)
def test_every_formula_goes_to_mathjax(site, page):
    assert site.returncode == 0, site.log[-3000:]
    text = _visible_text(site.html(page))
    loose = re.findall(r"\$\$|\\\(|\\\[|(?<![\w$])\$[^\s$][^$<]*\$", text)
    assert not loose, f"{page}: formulas outside MathJax's spans: {loose[:5]}"
    if 'class="arithmatex"' in site.html(page):
        assert "mathjax" in site.html(page).lower()


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs_in_time(site, page):
    assert site.returncode == 0, site.log[-3000:]
    assert page in site.seconds, f"{page} was not built"
    assert site.seconds[page] < SECONDS_PER_PAGE, f"{page}: its code blocks took {site.seconds[page]:.1f} s"


@pytest.mark.parametrize("page", LESSONS)
def test_lesson_has_figure_and_exercises(site, page):
    assert site.returncode == 0, site.log[-3000:]
    html = site.html(page)
    figures = html.count('id="figure_1"')  # a matplotlib SVG printed by the page's own code
    assert figures >= 1, f"{page}: no figure"
    source = (ROOT / "docs" / page).read_text()
    folded = re.findall(r'^\?\?\? success "Solution"\n((?:(?:    .*)?\n)*)', source, flags=re.M)
    solutions = [body for body in folded if '    ```python exec="on"' in body]  # each runs at build time
    exercises = re.findall(r'^!!! question "Exercise', source, flags=re.M)
    assert 2 <= len(exercises) <= 4 and len(solutions) == len(folded) == len(exercises), (page, exercises, folded)
    assert html.count('<details class="success"') == len(solutions)
