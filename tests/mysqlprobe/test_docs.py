"""docs/: every endpoint a node serves is on its role's page with a real example answer,
every configuration key is on a role page, and the README links every page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mysqlprobe.config import documented_defaults, load_config
from mysqlprobe.master import MasterNode
from mysqlprobe.node import BaseNode, SlaveNode
from tests.support.nodes import ROOT

DOCS = ROOT / "docs"
PAGES = ("slave.md", "master.md", "standby.md", "replay.md", "reading-the-report.md", "wire-capture.md")


def routes(node: BaseNode) -> set[str]:
    return {r.resource.canonical for r in node.app().router.routes() if r.resource is not None}


@pytest.mark.parametrize(("page", "slave"), [("slave.md", True), ("master.md", False)])
def test_every_endpoint_is_documented(page: str, slave: bool, tmp_path: Path) -> None:
    config = load_config(None)
    config.slave = slave
    node: BaseNode = SlaveNode(config, tmp_path) if slave else MasterNode(config, tmp_path)
    text = (DOCS / page).read_text()
    # named in the text (`GET /path`, `/path?x=`), or asked in a real example (GET /path)
    undocumented = sorted(
        path
        for path in routes(node)
        if not re.search(rf"(`[A-Z|]*\s*|^(GET|POST) ){re.escape(path)}([`?\s]|$)", text, re.M)
    )
    assert not undocumented, (
        f"docs/{page} lacks {undocumented}: describe each there with an example block, then fill the"
        " examples from real nodes with `python3 scripts/doc_examples.py`"
    )


def test_every_config_key_is_on_a_role_page() -> None:
    text = "".join((DOCS / page).read_text() for page in ("slave.md", "master.md", "standby.md"))
    missing = [
        key
        for key, _, _ in documented_defaults()
        if f"`{key}" not in text and f"`{key.split('.')[0]}.*`" not in text and f"{key}: " not in text
    ]
    assert not missing


@pytest.mark.parametrize("page", ["slave.md", "master.md", "standby.md"])
def test_examples_are_filled_with_real_answers(page: str) -> None:
    text = (DOCS / page).read_text()
    blocks = re.findall(r"<!-- example (\S+) -->\n(.*?)<!-- end example -->", text, re.S)
    assert len(blocks) >= 3
    for name, block in blocks:
        assert block.startswith("```\n") and block.endswith("```\n"), f"{page}: example {name} is not filled"
        body = block[4:-4]
        request, status, *rest = body.split("\n")
        assert re.match(r"(GET|POST) /", request), (name, request)
        if status.startswith("-> "):
            code, content_type = status[3:].split()[:2]
            assert code.isdigit(), (name, status)
            if content_type == "application/json":
                json.loads("\n".join(rest))  # real JSON, not an invented sketch of it
        else:  # the websocket feed: the decoded report follows
            json.loads("\n".join([status, *rest]))


def test_readme_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in PAGES:
        assert f"(docs/{page})" in readme, page
        assert (DOCS / page).exists()
