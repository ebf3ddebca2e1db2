"""The page after a failed search and after a lone click: no stale results, a plain message."""

from __future__ import annotations

from app.main import create_app
from app.settings import Settings
from tests.app.support import CATEGORIES, NEEDS_BROWSER, build_index, draw_line, make_gallery, served_page

pytestmark = NEEDS_BROWSER
GRID_FILLED = "document.querySelectorAll('#grid img').length > 0"
GRID_EMPTY = "document.querySelectorAll('#grid img').length === 0"


def test_errors_clear_old_results_and_a_lone_dot_asks_for_more(app_index, app_encoder, tmp_path):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, {"width": 900, "height": 700}) as (page, base):
        searches: list[str] = []
        page.on("request", lambda r: searches.append(r.url) if r.url.endswith("/search") else None)
        page.goto(base + "/")
        x0, y0, w = draw_line(page)
        page.wait_for_function(GRID_FILLED, timeout=20_000)

        not_an_image = tmp_path / "notes.txt"
        not_an_image.write_text("not a sketch")
        page.set_input_files("#file", str(not_an_image))
        page.wait_for_function(GRID_EMPTY, timeout=20_000)  # the drawing's results are gone ...
        assert "not a PNG" in page.inner_text("#message")  # ... and the server's reason is shown
        assert "No results" in page.inner_text("#summary")

        drawing = tmp_path / "cat.ndjson"  # a QuickDraw file: the page sends it, the server reads strokes
        drawing.write_text('{"word": "cat", "drawing": [[[10, 50, 90], [10, 80, 10]]]}\n')
        page.set_input_files("#file", str(drawing))
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        assert page.inner_text("#message") == ""

        page.click("#clear")
        assert page.inner_text("#message") == ""
        sent = len(searches)
        page.mouse.click(x0 + 0.5 * w, y0 + 0.5 * w)
        page.wait_for_function("document.getElementById('message').textContent.includes('single dot')")
        page.wait_for_timeout(400)  # past the debounce: still no request for a dot
        assert len(searches) == sent


def test_the_page_picks_up_an_index_published_after_it_loaded(app_encoder, tmp_path):
    gallery = make_gallery(tmp_path / "gallery", per_category=2)
    app = create_app(Settings(index_dir=tmp_path / "index", reload_interval_s=0.2), encoder=app_encoder)
    with served_page(app, {"width": 900, "height": 700}) as (page, base):
        page.goto(base + "/")
        page.wait_for_function("document.getElementById('status').textContent.includes('no index')")
        build_index(gallery, tmp_path / "index", app_encoder)
        page.wait_for_function("document.getElementById('status').textContent.includes('4 photos')",
                               timeout=20_000)
        assert page.locator("#category option").all_inner_texts() == ["all", *CATEGORIES]
