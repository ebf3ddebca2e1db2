"""The page's queries in Chromium: the busy state, a QuickDraw upload drawn on the canvas, the category filter
re-running the query, the composed "more like this" + words query, the summary in words, upload errors."""

from __future__ import annotations

import asyncio
import json

from app.main import create_app
from app.settings import Settings
from tests.app.support import NEEDS_BROWSER, draw_line, served_page
from tests.imagegen import draw_sketch

pytestmark = NEEDS_BROWSER
DESKTOP = {"width": 1100, "height": 760}
GRID_FILLED = "document.querySelectorAll('#grid img').length > 0"
GRID_EMPTY = "document.querySelectorAll('#grid img').length === 0"
INK = """() => {  // dark pixels on the canvas: what the user sees drawn
    const c = document.getElementById('canvas'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let dark = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] < 128) dark++;
    return dark;
}"""


def json_searches(page, base: str) -> list[dict]:
    """The JSON bodies the page posts to /search, as they are sent."""
    sent: list[dict] = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.url == base + "/search" and
            r.headers.get("content-type") == "application/json" else None)
    return sent


def test_a_search_in_flight_shows_busy_and_a_second_click_does_not_race_it(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)

    @app.middleware("http")
    async def slow_search(request, call_next):  # a slow service, so the second click lands mid-search
        if request.url.path == "/search":
            await asyncio.sleep(1.0)
        return await call_next(request)

    with served_page(app, DESKTOP) as (page, base):
        sent = json_searches(page, base)
        page.goto(base + "/")
        draw_line(page)
        page.wait_for_selector("#results[aria-busy=true]")  # the drawing's search runs: said at once
        assert page.is_visible("#busy")
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        assert page.get_attribute("#results", "aria-busy") == "false" and page.is_hidden("#busy")
        first, second = page.eval_on_selector_all("#grid .more", "b => b.slice(0, 2).map(x => Number(x.dataset.id))")

        # two "more like this" clicks in a row: the first one's query runs, the second waits for it
        page.evaluate("() => { const b = document.querySelectorAll('#grid .more'); b[0].click(); b[1].click(); }")
        assert page.get_attribute("#results", "aria-busy") == "true"
        assert page.eval_on_selector_all("#grid .more", "b => b.every(x => x.disabled)")
        page.wait_for_function("document.getElementById('summary').dataset.query === 'like'", timeout=20_000)
        page.wait_for_selector("#results[aria-busy=false]")
        likes = [body["like"] for body in sent if "like" in body]
        assert likes == [first], (likes, first, second)
        assert f"like photo #{first}" in page.inner_text("#summary")
        assert not page.eval_on_selector_all("#grid .more", "b => b.some(x => x.disabled)")


def test_a_quickdraw_file_is_drawn_and_a_category_change_reruns_the_query(app_index, app_encoder, tmp_path):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, DESKTOP) as (page, base):
        sent = json_searches(page, base)
        page.goto(base + "/")
        page.wait_for_function("document.querySelectorAll('#category option').length === 3")
        assert page.evaluate(INK) == 0
        drawing = tmp_path / "cat.ndjson"  # two QuickDraw drawings (simplified format): the first is the query
        drawing.write_text('{"word": "cat", "drawing": [[[10, 50, 90], [10, 80, 10]], [[20, 80], [60, 60]]]}\n'
                           '{"word": "dog", "drawing": [[[0, 255], [0, 255]]]}\n')
        page.set_input_files("#file", str(drawing))
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        assert page.evaluate(INK) > 500  # the strokes are on the canvas, not just sent
        assert page.is_hidden("#hint")
        assert [len(stroke) for stroke in sent[-1]["strokes"]] == [3, 2]  # as the user's own drawing
        assert page.locator("#grid img").count() == 8

        page.select_option("#category", "apple")  # the filter re-runs the query on show
        page.wait_for_function("document.getElementById('summary').textContent.includes('apple')", timeout=20_000)
        assert sent[-1]["category"] == "apple" and sent[-1]["strokes"] == sent[-2]["strokes"]
        assert page.locator("#grid img").count() == 4
        assert set(page.locator("#grid .meta span:first-child").all_inner_texts()) == {"apple"}

        before = len(sent)
        page.click("#undo")  # the file's strokes are editable like drawn ones
        page.wait_for_function("document.querySelectorAll('#grid img').length === 4", timeout=20_000)
        page.wait_for_timeout(400)  # past the debounce
        assert len(sent) == before + 1 and [len(stroke) for stroke in sent[-1]["strokes"]] == [3]


def test_an_upload_the_browser_cannot_show_is_rerun_when_the_category_changes(app_index, app_encoder, tmp_path):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, DESKTOP) as (page, base):
        uploads: list[str] = []
        page.on("request", lambda r: uploads.append(r.url) if r.url == base + "/search" and
                r.headers.get("content-type", "").startswith("multipart/") else None)
        page.goto(base + "/")
        page.wait_for_function("document.querySelectorAll('#category option').length === 3")
        sketch = tmp_path / "sketch.tiff"  # the service reads TIFF, Chromium cannot show it
        draw_sketch(seed=3).save(sketch, "TIFF")
        page.set_input_files("#file", str(sketch))
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        page.select_option("#category", "boat")
        page.wait_for_function("document.getElementById('summary').textContent.includes('boat')", timeout=20_000)
        assert page.locator("#grid img").count() == 4 and len(uploads) == 2  # the file itself, sent again


def test_more_like_this_with_words_shows_the_composed_query_and_the_summary_in_words(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, DESKTOP) as (page, base):
        page.goto(base + "/")
        draw_line(page)
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        summary = page.inner_text("#summary")
        assert summary == "8 photos closest to your drawing."  # in words first ...
        assert page.is_visible("#details") and page.is_hidden("#details-text")  # ... the figures folded away
        page.click("#details summary")
        details = page.inner_text("#details-text")
        assert "index version " in details and " ms" in details and "sketch" in details

        liked = int(page.locator("#grid .more").first.get_attribute("data-id"))
        page.locator("#grid .more").first.click()
        assert page.evaluate("document.activeElement.id") == "summary"  # the clicked card leaves with its results
        page.wait_for_function("document.getElementById('summary').dataset.query === 'like'", timeout=20_000)
        assert page.inner_text("#like-text") == f"Searching photos like #{liked}"
        page.type("#text", "boat", delay=20)
        # the composed query is said while it is typed, and again by the results it brings
        assert page.inner_text("#like-text") == f"Searching photos like #{liked} + the words “boat” (words weigh 0.30)"
        page.wait_for_function("document.getElementById('summary').dataset.query === 'like+text'", timeout=20_000)
        assert page.inner_text("#summary") == f"7 photos like photo #{liked} and the words “boat” (words weigh 0.30)."


def test_back_after_more_like_this_brings_the_drawing_and_its_results_again(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, DESKTOP) as (page, base):
        sent = json_searches(page, base)
        page.goto(base + "/")
        draw_line(page)
        page.wait_for_function("document.getElementById('summary').dataset.query === 'sketch'", timeout=20_000)
        drawn = sent[-1]["strokes"]
        liked = int(page.locator("#grid .more").first.get_attribute("data-id"))
        page.locator("#grid .more").first.click()
        page.wait_for_function("document.getElementById('summary').dataset.query === 'like'", timeout=20_000)
        assert page.evaluate(INK) == 0 and page.url == base + "/"  # the like query holds no drawing

        page.go_back()  # the drawing comes back, and is searched again: the page did not leave
        page.wait_for_function("document.getElementById('summary').dataset.query === 'sketch'", timeout=20_000)
        assert page.url == base + "/" and page.evaluate(INK) > 100 and page.is_hidden("#like-chip")
        assert sent[-1]["strokes"] == drawn and "like" not in sent[-1]

        page.go_forward()  # and the liked photo again
        page.wait_for_function("document.getElementById('summary').dataset.query === 'like'", timeout=20_000)
        assert sent[-1]["like"] == liked and page.evaluate(INK) == 0
        assert page.inner_text("#like-text") == f"Searching photos like #{liked}"


def test_a_non_image_upload_shows_the_services_error_where_the_results_go(app_index, app_encoder, tmp_path):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, DESKTOP) as (page, base):
        page.goto(base + "/")
        draw_line(page)
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        not_an_image = tmp_path / "notes.txt"
        not_an_image.write_text("not a sketch")
        page.set_input_files("#file", str(not_an_image))
        page.wait_for_function(GRID_EMPTY, timeout=20_000)
        summary = page.inner_text("#summary")
        assert "not a PNG" in summary and "No results for this sketch" not in summary
        assert page.is_hidden("#details")


def test_an_svg_drawing_is_uploaded_and_searched(app_index, app_encoder, tmp_path):
    """An SVG sketch (TU-Berlin, Sketchy, a drawing app) goes as the file itself; the service reads its lines."""
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, DESKTOP) as (page, base):
        answers = []
        page.on("response", lambda r: answers.append(r.status) if r.url.startswith(base + "/search") else None)
        page.goto(base + "/")
        drawing = tmp_path / "cat.svg"  # no width/height: the browser may not know its size, the service does not care
        drawing.write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><path d="M10 10 C 40 90 '
                           '60 90 90 10 M 20 60 L 80 60" stroke="#000" fill="none" stroke-width="2"/></svg>')
        page.set_input_files("#file", str(drawing))
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        assert answers and set(answers) == {200}
        assert page.inner_text("#message").strip() == ""


def test_a_quickdraw_class_file_over_the_upload_limit_and_a_stroke3_file_are_drawn(app_index, app_encoder, tmp_path):
    """QuickDraw's per-class ndjson runs to hundreds of MB: only its first drawing is read (and sent, as strokes),
    so the upload limit does not stand in the way; sketch-rnn's stroke-3 offsets are drawn as strokes too."""
    app = create_app(Settings(index_dir=app_index[1], max_upload_bytes=64 * 1024), encoder=app_encoder)
    with served_page(app, DESKTOP) as (page, base):
        sent = json_searches(page, base)
        page.goto(base + "/")
        page.wait_for_function("document.querySelectorAll('#category option').length === 3")
        many = tmp_path / "full_simplified_cat.ndjson"
        first = '{"word": "cat", "drawing": [[[10, 50, 90], [10, 80, 10]], [[20, 80], [60, 60]]]}\n'
        many.write_text(first + '{"word": "cat", "drawing": [[[0, 255], [0, 255]]]}\n' * 5000)  # ~250 KB
        page.set_input_files("#file", str(many))
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        assert page.evaluate(INK) > 500 and [len(s) for s in sent[-1]["strokes"]] == [3, 2]

        offsets = tmp_path / "cat.json"  # stroke-3: offsets from the last point, 1 = the pen lifts after the point
        offsets.write_text(json.dumps({"strokes": [[10, 10, 0], [40, 70, 1], [-30, -20, 0], [60, 0, 0], [10, -50, 1]]}))
        with page.expect_response(lambda r: r.url == base + "/search", timeout=20_000) as answer:
            page.set_input_files("#file", str(offsets))
        assert answer.value.status == 200
        assert [len(s) for s in sent[-1]["strokes"]] == [2, 3] and page.evaluate(INK) > 500

        mixed = tmp_path / "mixed.json"  # stroke-3 and stroke-5 rows together: the service says what is wrong
        mixed.write_text(json.dumps({"strokes": [[10, 10, 0], [40, 70, 1, 0, 0]]}))
        with page.expect_response(lambda r: r.url == base + "/search", timeout=20_000) as answer:
            page.set_input_files("#file", str(mixed))
        assert answer.value.status == 422
        page.wait_for_function("document.querySelector('#message').textContent.includes('one length')")

        long_stroke = tmp_path / "scribble.json"  # past the call stack's room for Math.min(...points): fitted in a loop
        long_stroke.write_text(json.dumps({"strokes": [[[i % 997, i // 997] for i in range(150_000)]]}))
        with page.expect_response(lambda r: r.url == base + "/search", timeout=30_000) as answer:
            page.set_input_files("#file", str(long_stroke))
        assert answer.value.status in (200, 413, 422) and len(sent[-1]["strokes"][0]) == 150_000
