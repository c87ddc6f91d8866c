"""The Teams card as Teams draws it: the official Adaptive Cards renderer (npm `adaptivecards`,
pinned in package.json, vendored into the page: no CDN) in headless Chromium."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from core.digest import title
from notifier.chat_render import teams_payload
from tests.browser.chromium import dump_dom
from tests.conftest import ROOT
from tests.unit.test_digest import digest_of

pytestmark = pytest.mark.e2e
RENDERER = ROOT / "node_modules" / "adaptivecards" / "dist" / "adaptivecards.min.js"

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>card</title>
<script>{renderer}</script></head><body><div id="card"></div><div id="errors"></div>
<script>
  var card = new AdaptiveCards.AdaptiveCard();
  var context = new AdaptiveCards.SerializationContext();
  card.parse({card}, context);
  var rendered = card.render();
  document.getElementById("card").appendChild(rendered);
  var problems = context.eventCount + card.validateProperties().validationEvents.length;
  document.getElementById("errors").textContent = String(problems);
</script></body></html>"""


class _Blocks(HTMLParser):
    """Texts of the renderer's TextBlocks and FactSet cells, in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self._depth = 0
        self._classes: list[str] = []
        self.errors = ""
        self._in_errors = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = dict(attrs).get("class") or ""
        if dict(attrs).get("id") == "errors":
            self._in_errors = True
        if "ac-textBlock" in classes.split():
            self.blocks.append("")
            self._depth = 1
        elif self._depth:
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_errors = False
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._in_errors:
            self.errors += data
        if self._depth:
            self.blocks[-1] += data


def render(tmp_path: Path, payload: dict) -> _Blocks:
    card = payload["attachments"][0]["content"]
    page = tmp_path / "card.html"
    renderer = RENDERER.read_text().replace("</script>", "<\\/script>")
    page.write_text(PAGE.replace("{renderer}", renderer).replace("{card}", json.dumps(card)))
    parsed = _Blocks()
    parsed.feed(dump_dom(page))
    return parsed


def test_the_renderer_is_pinned_and_vendored():
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert json.loads((ROOT / "package.json").read_text())["dependencies"]["adaptivecards"] == "3.0.6"
    assert lock["packages"]["node_modules/adaptivecards"]["version"] == "3.0.6"
    assert RENDERER.is_file()


def test_the_card_of_cn340_to_cn341_renders_every_region_and_its_numbers(tmp_path):
    digest = digest_of(340, 341)
    page = render(tmp_path, teams_payload(digest))
    assert page.errors == "0"
    regions = [c["region"] for c in digest["changes"]]
    shown = [b for b in page.blocks if b in regions]
    assert shown == regions  # every changed region, in order, read back from the rendered page
    at = page.blocks.index("AzureCloud.germanywc")
    assert page.blocks[at + 1] == "prefixes +2/-0 · IPv4 +33,280/-0 · IPv6 /64s +0/-0"
    assert page.blocks[0] == title(digest)


def test_the_largest_week_renders_new_regions_first_and_says_what_was_folded(tmp_path):
    digest = digest_of(350, 353)
    payload = teams_payload(digest)
    assert len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()) <= 28 * 1024
    page = render(tmp_path, payload)
    assert page.errors == "0"
    assert page.blocks[1:4] == [
        "New region: chilecentral",
        "New region: malaysiawest",
        "New region: southeastus",
    ]
    regions = [c["region"] for c in digest["changes"]]
    shown = [b for b in page.blocks if b in regions]
    assert shown[:3] == ["chilecentral", "malaysiawest", "southeastus"] and len(shown) >= 10
    facts = sum(1 for b in page.blocks if b.startswith("prefixes +"))
    note = "more tag changes not shown here; they are in the full reports."
    assert [b for b in page.blocks if b.endswith(note)] == [f"{len(digest['rows']) - facts} {note}"]


def test_the_impact_section_renders_without_errors(tmp_path):
    from tests.unit.test_digest import GAINED_EASTUS2, NSG_EASTUS2, impact_digest

    page = render(tmp_path, teams_payload(impact_digest()))
    assert page.errors == "0"
    head = next(b for b in page.blocks if b.startswith("Impact on your rules:"))
    assert head == (
        "Impact on your rules: 20 rules touched in 4 of 30 regions checked; not yet computed for eastus"
    )
    # The renderer's markdown: the rule in bold, what it gained as a list item.
    assert any(NSG_EASTUS2 in b and GAINED_EASTUS2 in b for b in page.blocks)
