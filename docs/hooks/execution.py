"""MkDocs hook: the CPU time that each page's code blocks take.

markdown-exec runs a page's ``python exec="on"`` blocks while the page's Markdown is converted, i.e.
between ``on_page_markdown`` and ``on_page_content``. This hook measures the CPU time of that interval
per page (wall time means little on a shared machine) and, when ``ODESOLVE_DOCS_TIMINGS`` names a file,
writes ``{page: seconds}`` there as JSON (the docs tests read it).
"""

import json
import os
import time

_started: dict[str, float] = {}
_seconds: dict[str, float] = {}


def on_page_markdown(markdown, page, **kwargs):
    _started[page.file.src_uri] = time.process_time()
    return markdown


def on_page_content(html, page, **kwargs):
    _seconds[page.file.src_uri] = time.process_time() - _started.pop(page.file.src_uri)
    return html


def on_post_build(config, **kwargs):
    target = os.environ.get("ODESOLVE_DOCS_TIMINGS")
    if target:
        with open(target, "w") as f:
            json.dump(_seconds, f, indent=1, sort_keys=True)
