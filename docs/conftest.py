"""The docs' code blocks each run once in the test suite.

Blocks written ``python exec="on" ...`` are executed by markdown-exec while the site is built (the site build
test, tests/docs/, fails on any error); pytest-markdown-docs would run them a second time, without their
session, so they are deselected here. Plain ``python`` blocks stay pytest-markdown-docs tests.
"""

from pathlib import Path


def _executed_at_build(item) -> bool:
    definition = getattr(item, "test_definition", None)
    if definition is None or Path(definition.source_path).suffix != ".md":
        return False
    lines = Path(definition.source_path).read_text().splitlines()
    fence = lines[definition.start_line - 1] if 0 < definition.start_line <= len(lines) else ""
    return "exec=" in fence


def pytest_collection_modifyitems(config, items):
    deselected = [item for item in items if _executed_at_build(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
