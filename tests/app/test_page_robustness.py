"""The page in Chromium against what users do by accident: a pasted API key no header can carry (it used to make
the service look unreachable for good), a service that answers /info with 503 while it starts, Ctrl+Z in the
words box, a fast mouse sending many points on one spot, a file dropped beside the pad."""

from __future__ import annotations

import json

from app.main import create_app
from app.settings import Settings
from tests.app.support import NEEDS_BROWSER, draw_line, served_page

pytestmark = NEEDS_BROWSER
VIEW = {"width": 1100, "height": 760}
KEY = "page-key-0123456789abcdef"
GRID_FILLED = "document.querySelectorAll('#grid img').length > 0"


def test_a_stored_key_no_header_can_carry_asks_for_the_key_instead_of_an_outage(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1], api_key=KEY), encoder=app_encoder)
    with served_page(app, VIEW) as (page, base):
        page.add_init_script(f"localStorage.setItem('sbir-api-key', {json.dumps(KEY + chr(0x200B))})")
        page.goto(base + "/")
        page.wait_for_selector("#key-field:not([hidden])")  # asked for, not "cannot be reached"
        assert "cannot be reached" not in page.inner_text("#error")
        page.fill("#api-key", "“" + KEY + "”")  # a key pasted with curly quotes is refused on the spot ...
        page.press("#api-key", "Enter")
        page.wait_for_function("document.getElementById('error').textContent.includes('paste it again')")
        assert page.evaluate("localStorage.getItem('sbir-api-key')") is None
        page.fill("#api-key", f"  {KEY} ")  # ... and a good one with spaces around it is taken
        page.press("#api-key", "Enter")
        draw_line(page)
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        assert page.evaluate("localStorage.getItem('sbir-api-key')") == KEY
        assert page.is_hidden("#error")


def test_a_starting_service_leaves_the_page_as_it_is(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, VIEW) as (page, base):
        page.goto(base + "/")
        page.wait_for_function("document.querySelectorAll('#category option').length > 1")
        page.select_option("#category", "boat")
        starting = json.dumps({"error": "not_ready", "detail": "the service is starting"})
        page.route(base + "/info", lambda route: route.fulfill(status=503, body=starting,
                                                              content_type="application/json"))
        page.evaluate("loadInfo()")
        page.wait_for_function("document.getElementById('status').textContent.includes('starting')")
        assert page.input_value("#category") == "boat"  # not reset to "all" by a body that is no /info
        assert page.is_hidden("#error")


def test_ctrl_z_in_the_words_box_is_the_boxs_own_and_dense_points_are_thinned(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, VIEW) as (page, base):
        page.goto(base + "/")
        box = page.locator("#canvas").bounding_box()
        x, y = box["x"] + 50, box["y"] + 50
        page.mouse.move(x, y)
        page.mouse.down()
        for step in range(200):  # a fast mouse: many events, a tenth of a pixel apart
            page.mouse.move(x + step * 0.1, y)
        page.mouse.move(x + 120, y + 60, steps=6)
        page.mouse.up()
        points = page.evaluate("state.strokes[0].points")
        assert 20 <= len(points) < 40  # ~1 px apart, not 200 points on 20 px
        page.fill("#text", "boat")
        page.press("#text", "Control+z")
        assert page.evaluate("state.strokes.length") == 1  # the stroke stays
        page.evaluate("document.activeElement.blur()")  # back on the page itself: Ctrl+Z undoes the stroke
        page.keyboard.press("Control+Shift+z")  # redo is not undo (the browser's: it may return to the words box)
        assert page.evaluate("state.strokes.length") == 1
        page.evaluate("document.activeElement.blur()")
        page.keyboard.press("Control+z")
        assert page.evaluate("state.strokes.length") == 0


def test_a_file_dropped_beside_the_pad_does_not_replace_the_page(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, VIEW) as (page, base):
        page.goto(base + "/")
        draw_line(page)
        prevented = page.evaluate("""() => {
            const data = new DataTransfer();
            data.items.add(new File(["not a sketch"], "notes.txt", {type: "text/plain"}));
            const drop = new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true});
            document.querySelector("header").dispatchEvent(drop);
            return drop.defaultPrevented;
        }""")
        assert prevented and page.url.startswith(base) and page.evaluate("state.strokes.length") == 1


def test_the_upload_button_is_reached_by_the_keyboard(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, VIEW) as (page, base):
        page.goto(base + "/")
        page.focus("#clear")
        for _ in range(3):  # Clear → Brush → Upload… in the tab order
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "file":
                break
        assert page.evaluate("document.activeElement.id") == "file"
        assert page.evaluate("getComputedStyle(document.querySelector('.upload')).outlineStyle") == "solid"


def test_a_file_over_the_upload_limit_is_refused_before_it_is_sent(app_index, app_encoder, tmp_path):
    app = create_app(Settings(index_dir=app_index[1], max_upload_bytes=64 * 1024), encoder=app_encoder)
    big = tmp_path / "phone-photo.jpg"
    big.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200 * 1024))
    with served_page(app, VIEW) as (page, base):
        sent = []
        page.on("request", lambda request: sent.append(request.url) if request.url.endswith("/search") else None)
        page.goto(base + "/")
        page.wait_for_function("state.maxUploadBytes === 65536")
        page.set_input_files("#file", str(big))
        page.wait_for_function("document.getElementById('message').textContent.includes('at most 0.1 MB')")
        assert "0.2 MB" in page.inner_text("#message") and sent == []


def test_a_busy_service_is_asked_again_when_it_says(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    busy = json.dumps({"error": "busy", "detail": "Too many uploads in progress; retry shortly."})
    with served_page(app, VIEW) as (page, base):
        answers = []

        def first_busy(route):
            answers.append(1)
            if len(answers) == 1:
                route.fulfill(status=503, body=busy, content_type="application/json", headers={"Retry-After": "1"})
            else:
                route.continue_()

        page.route(base + "/search", first_busy)
        page.goto(base + "/")
        draw_line(page)
        page.wait_for_function("document.getElementById('message').textContent.includes('Asking again in 1 s')")
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        assert len(answers) == 2 and page.inner_text("#message") == ""



INK_BOX = """() => {  // the drawing's box on the canvas, as shares of its side
    const c = document.getElementById('canvas'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let x0 = c.width, y0 = c.height, x1 = -1, y1 = -1;
    for (let i = 0; i < d.length; i += 4) {
        if (d[i] >= 128) continue;
        const p = i / 4, x = p % c.width, y = Math.floor(p / c.width);
        x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
    }
    return [x0 / c.width, y0 / c.height, x1 / c.width, y1 / c.height, c.width];
}"""


def test_a_drawing_keeps_its_place_when_the_pad_changes_size(app_index, app_encoder):
    """Turning a phone or resizing the window resizes the pad: the strokes scale with it, not shrink to a corner."""
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, {"width": 1100, "height": 760}) as (page, base):
        page.goto(base + "/")
        draw_line(page)
        before = page.evaluate(INK_BOX)
        page.set_viewport_size({"width": 420, "height": 900})
        page.wait_for_function(f"document.getElementById('canvas').width !== {before[4]}")
        after = page.evaluate(INK_BOX)
        assert after[4] != before[4]
        assert all(abs(a - b) < 0.03 for a, b in zip(after[:4], before[:4], strict=True)), (before, after)
