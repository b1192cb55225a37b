"""The documentation site (mkdocs.yml, docs/): it builds with ``--strict``, so a broken link or
a name the API reference cannot find fails; and every ```python sample of its pages runs, so
the docs cannot rot.

A page's samples run in order in one namespace (a later sample builds on an earlier one, as a
reader follows the page), in a fresh directory whose SQLite database is the default
(``FLOODWAY_DATABASE_URL``). floodway's public names are in the namespace, as they are for a
reader who did ``from floodway import *``. The names of the APIs a page calls (``API``,
``GITHUB_API``, ...) are loopback servers from ``tests/destination.py`` that really enforce a
quota, answering the way that API does. Samples not meant to run (shell, a systemd unit) are in
other languages' blocks."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import floodway

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cost_destination import CostDestination  # noqa: E402
from destination import Destination  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: a fenced Python block, at the top level or indented under a list item
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)

#: the APIs a page may call: each a server answering the way that API does, made small and
#: fast so a sample drains in a second or two
SERVERS: dict[str, Callable[[], Destination]] = {
    "API": lambda: Destination(rate=50, burst=5, style="leaky", idempotency=True),
    "GITHUB_API": lambda: Destination(rate=20, window=1.0, style="fixed-window", exhausted_status=403),
    "SHOPIFY_API": lambda: Destination(rate=20, burst=10, style="usage"),
    "SHOPIFY_GRAPHQL": lambda: CostDestination(size=1000, restore=50),
    "HUBSPOT_API": lambda: Destination(rate=20, burst=2, style="bare"),
    "STRIPE_API": lambda: Destination(rate=20, burst=2, style="bare", idempotency=True),
    "ZENDESK_API": lambda: Destination(rate=20, window=1.0, style="quota"),
}


def samples(page: Path) -> list[tuple[int, str]]:
    """(line, code) of each ```python block of a page."""
    text = page.read_text()
    return [(text.count("\n", 0, m.start()) + 2, textwrap.dedent(m.group(2))) for m in FENCE.finditer(text)]


PAGES = sorted(p.name for p in DOCS.glob("*.md") if samples(p))


def test_every_page_is_in_the_site() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [p.name for p in DOCS.glob("*.md") if p.name not in nav]
    assert not missing, f"pages left out of mkdocs.yml's nav: {missing}"


def test_the_site_builds_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "reference" / "index.html").read_text().count("Context") > 1


@contextlib.contextmanager
def servers_for(text: str) -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        urls = {}
        for name, make in SERVERS.items():
            if re.search(rf"\b{name}\b", text):
                urls[name] = stack.enter_context(make()).url
        yield urls


@pytest.mark.parametrize("page", PAGES)
def test_samples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOODWAY_DATABASE_URL", f"sqlite:///{tmp_path / 'floodway.db'}")
    path = DOCS / page
    namespace: dict[str, Any] = {"__name__": "docs_sample"}
    namespace.update({name: getattr(floodway, name) for name in floodway.__all__})
    try:
        with servers_for(path.read_text()) as urls:
            namespace.update(urls)
            for line, code in samples(path):
                try:
                    exec(compile(code, f"{page}:{line}", "exec"), namespace)
                except BaseException as exc:
                    raise AssertionError(f"the sample at {page}, line {line}, failed: {exc!r}") from exc
    finally:
        for value in namespace.values():
            if isinstance(value, floodway.App):
                value.close()
