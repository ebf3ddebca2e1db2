"""The draw-to-search page in a real browser: Playwright drives Debian's Chromium against a real uvicorn."""

from __future__ import annotations

import json
import os
from pathlib import Path

from app.main import create_app
from app.settings import Settings
from tests.app.support import NEEDS_BROWSER, served_page, sketch_png

pytestmark = NEEDS_BROWSER


def draw(page, *strokes: list[tuple[float, float]]) -> None:
    """Mouse strokes on the canvas, in fractions of its size."""
    box = page.locator("#canvas").bounding_box()
    x0, y0, w = box["x"], box["y"], box["width"]
    for stroke in strokes:
        page.mouse.move(x0 + stroke[0][0] * w, y0 + stroke[0][1] * w)
        page.mouse.down()
        for fx, fy in stroke[1:]:
            page.mouse.move(x0 + fx * w, y0 + fy * w, steps=8)
        page.mouse.up()


def ids_on_show(page) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all("#grid .more", "buttons => buttons.map(b => b.dataset.id)")]


def test_drawing_on_the_canvas_shows_result_photos(app_index, app_encoder, tmp_path):
    shots = Path(os.environ.get("SBIR_ARTIFACTS_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, {"width": 1100, "height": 760}) as (page, base):
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        searches: list[dict] = []  # JSON bodies the page posted to /search
        page.on("request", lambda r: searches.append(json.loads(r.post_data)) if r.url == base + "/search" and
                r.headers.get("content-type") == "application/json" else None)
        external: list[str] = []
        page.on("request", lambda r: external.append(r.url) if r.url.startswith("http") and
                not r.url.startswith(base) else None)
        page.goto(base + "/")
        page.wait_for_selector("#warning:not([hidden])")
        assert "meaningless" in page.inner_text("#warning")  # random weights are said plainly
        assert "index" in page.inner_text("#status")

        draw(page, [(0.2, 0.3), (0.5, 0.2), (0.8, 0.4)], [(0.3, 0.7), (0.5, 0.8), (0.7, 0.65)])

        page.wait_for_function(
            "document.querySelectorAll('#grid img').length > 0 && "
            "[...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)",
            timeout=20_000,
        )
        count = page.locator("#grid img").count()
        assert count == 8  # the whole tiny gallery (k=20 > 8 photos)
        assert "photos" in page.inner_text("#summary")
        first = page.locator("#grid a").first
        assert first.get_attribute("href").startswith("/photos/") and first.get_attribute("target") == "_blank"
        page.screenshot(path=str(shots / "app-page.png"), full_page=True)

        page.click("#undo")
        page.click("#clear")
        page.wait_for_function("document.querySelectorAll('#grid img').length === 0")

        # A pen (or finger) goes through the same Pointer Events path as the mouse.
        page.evaluate("""() => {
            const canvas = document.getElementById('canvas'), r = canvas.getBoundingClientRect();
            const at = (x, y, type) => canvas.dispatchEvent(new PointerEvent(type, {pointerId: 7,
                pointerType: 'pen', isPrimary: true, bubbles: true, buttons: type === 'pointerup' ? 0 : 1,
                clientX: r.left + x * r.width, clientY: r.top + y * r.height}));
            at(0.2, 0.2, 'pointerdown');
            for (let i = 1; i <= 10; i++) at(0.2 + i * 0.06, 0.2 + i * 0.05, 'pointermove');
            at(0.8, 0.7, 'pointerup');
        }""")
        page.wait_for_function("document.querySelectorAll('#grid img').length > 0", timeout=20_000)
        page.click("#clear")
        page.wait_for_function("document.querySelectorAll('#grid img').length === 0")

        sketch = tmp_path / "upload.png"
        sketch.write_bytes(sketch_png(seed=3))
        page.set_input_files("#file", str(sketch))  # the upload path sends the file itself
        page.wait_for_function("document.querySelectorAll('#grid img').length > 0", timeout=20_000)

        # Words alone search as you type (debounced: one request for the whole word) ...
        page.click("#clear")
        page.wait_for_function("document.querySelectorAll('#grid img').length === 0")
        searches.clear()
        page.type("#text", "boat", delay=20)
        page.wait_for_function("document.querySelectorAll('#grid .result').length > 0", timeout=20_000)
        assert searches[-1] == {"text": "boat", "k": 20, "category": None}
        assert len(searches) <= 2 and page.is_hidden("#weight-field")  # no slider without a drawing
        # ... and with a drawing they refine it, weighted by the slider.
        draw(page, [(0.2, 0.3), (0.5, 0.2), (0.8, 0.4)])
        page.wait_for_function("document.getElementById('summary').dataset.query === 'sketch+text'", timeout=20_000)
        assert page.is_visible("#weight-field")
        assert searches[-1]["text"] == "boat" and searches[-1]["text_weight"] == 0.3 and searches[-1]["strokes"]
        before = ids_on_show(page)

        # "More like this" on a result: its id becomes the query (with the words), the drawing goes.
        liked = int(page.locator("#grid .more").nth(1).get_attribute("data-id"))
        page.locator("#grid .more").nth(1).click()
        page.wait_for_function("document.getElementById('summary').dataset.query === 'like+text'", timeout=20_000)
        assert searches[-1] == {"like": liked, "text": "boat", "text_weight": 0.3, "k": 20, "category": None}
        after = ids_on_show(page)
        assert after != before and liked not in after and len(after) == 7  # the other photos of the gallery
        assert page.is_visible("#like-chip") and str(liked) in page.inner_text("#like-chip")
        page.screenshot(path=str(shots / "app-page-more-like-this.png"), full_page=True)
        assert not errors, errors
        assert not external, external
