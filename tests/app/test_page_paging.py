"""The page's "more results" in Chromium: the next page (offset, has_more) is fetched and appended, for drawings
and uploads alike, and a changed query drops the old results' next page."""

from __future__ import annotations

from app.main import create_app
from app.settings import Settings
from tests.app.support import NEEDS_BROWSER, draw_line, served_page
from tests.imagegen import draw_sketch

from .test_page_queries import DESKTOP, json_searches

pytestmark = NEEDS_BROWSER
CARDS = "document.querySelectorAll('#grid .result').length === {}"
# The select offers 10/20/50 and the test gallery holds 8 photos: pages of 3 need an option of 3.
PAGES_OF_3 = """() => { const k = document.getElementById('k'); k.add(new Option('3')); k.value = '3';
    k.dispatchEvent(new Event('change')); }"""
WHOLE = """async (body) => (await (await fetch('/search', {method: 'POST',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)})).json()).results.map(r => r.id)"""


def shown_ids(page) -> list[int]:
    return page.eval_on_selector_all("#grid .more", "b => b.map(x => Number(x.dataset.id))")


def test_more_results_appends_the_next_pages_until_there_are_none(app_index, app_encoder, tmp_path):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, DESKTOP) as (page, base):
        sent = json_searches(page, base)
        page.goto(base + "/")
        page.evaluate(PAGES_OF_3)
        assert page.is_hidden("#more-results")
        draw_line(page)
        page.wait_for_function(CARDS.format(3), timeout=20_000)
        page.wait_for_selector("#results[aria-busy=false]")
        assert page.is_visible("#more-results")  # has_more: 8 photos, 3 on show

        page.click("#more-results")
        page.wait_for_function(CARDS.format(6), timeout=20_000)
        assert (sent[-1]["offset"], sent[-1]["k"], sent[-1]["strokes"]) == (3, 3, sent[0]["strokes"])
        assert page.inner_text("#summary").startswith("6 photos closest to your drawing")
        page.wait_for_selector("#results[aria-busy=false]")
        page.click("#more-results")
        page.wait_for_function(CARDS.format(8), timeout=20_000)
        page.wait_for_selector("#results[aria-busy=false]")
        assert page.is_hidden("#more-results")  # the last page: has_more is false
        whole = page.evaluate(WHOLE, {"strokes": sent[0]["strokes"], "k": 8})
        assert shown_ids(page) == whole  # the pages add up to one long search, in its order

        draw_line(page)  # a new query: its own first page replaces the three, and pages again from there
        page.wait_for_function(CARDS.format(3), timeout=20_000)
        page.wait_for_selector("#results[aria-busy=false]")
        assert "offset" not in sent[-1] and page.is_visible("#more-results")

        sketch = tmp_path / "sketch.png"  # an upload (a multipart form) pages the same way
        draw_sketch(seed=5).save(sketch)
        with page.expect_response(lambda response: response.url == base + "/search"):
            page.set_input_files("#file", str(sketch))
        page.wait_for_selector("#results[aria-busy=false]")
        assert page.is_visible("#more-results")
        first = shown_ids(page)
        page.click("#more-results")
        page.wait_for_function(CARDS.format(6), timeout=20_000)
        ids = shown_ids(page)
        assert ids[:3] == first and len(set(ids)) == 6
