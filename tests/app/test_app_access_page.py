"""The page with an API key configured, in a real browser: it asks for the key, and the signed photo URLs
of the results load in Chromium's <img> (which cannot send the key header)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from app.main import create_app
from app.settings import Settings
from tests.app.support import CATEGORIES, NEEDS_BROWSER, draw_line, served_page

pytestmark = NEEDS_BROWSER
KEY = "page-key-0123456789abcdef"
IMAGES_LOADED = ("document.querySelectorAll('#grid img').length > 0 && "
                 "[...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)")


def test_the_page_asks_for_the_key_and_shows_signed_photos(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1], api_key=KEY), encoder=app_encoder)
    with served_page(app, {"width": 900, "height": 700}) as (page, base):
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        photo_answers: list[tuple[str, int]] = []
        page.on("response", lambda r: photo_answers.append((r.url, r.status)) if "/photos/" in r.url else None)
        page.goto(base + "/")
        page.wait_for_selector("#key-field:not([hidden])")
        assert "API key" in page.inner_text("#status")
        assert page.locator("#category option").all_inner_texts() == ["all"]  # nothing told before the key

        page.fill("#api-key", "wrong-key-0123456789abcdef")
        page.press("#api-key", "Enter")
        page.wait_for_function("document.getElementById('status').textContent.includes('not accepted')")

        page.fill("#api-key", KEY)
        page.press("#api-key", "Enter")
        page.wait_for_function("document.getElementById('status').textContent.includes('8 photos')",
                               timeout=20_000)
        assert page.locator("#category option").all_inner_texts() == ["all", *CATEGORIES]
        draw_line(page)
        page.wait_for_function(IMAGES_LOADED, timeout=20_000)
        sources = page.eval_on_selector_all("#grid img", "images => images.map(i => i.getAttribute('src'))")
        links = page.eval_on_selector_all("#grid a", "links => links.map(a => a.getAttribute('href'))")
        assert len(sources) == 8
        for url in sources + links:
            assert {"v", "exp", "sig"} <= set(dict(parse_qsl(urlsplit(url).query))), url
        assert photo_answers and all(status == 200 for _, status in photo_answers), photo_answers

        # the full photo a result links to opens with its signature alone, in a fresh context without the key
        opened = page.context.browser.new_page()
        try:
            response = opened.goto(base + links[0])
            assert response.status == 200 and response.headers["content-type"] == "image/jpeg"
            assert response.headers["cache-control"].startswith("private")
            assert opened.goto(base + urlsplit(links[0]).path).status == 401  # no signature, no photo
        finally:
            opened.close()

        page.reload()  # the key is remembered
        page.wait_for_function("document.getElementById('status').textContent.includes('8 photos')",
                               timeout=20_000)
        assert not errors, errors
