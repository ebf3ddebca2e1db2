"""The page following the service in Chromium: an outage clears the results and says so, the header tells a
refused index from a missing one and follows hot reloads, the error banner stays in sight of the API-key prompt,
and on a phone a button points to the results below the fold."""

from __future__ import annotations

import os
from pathlib import Path

from app.main import create_app
from app.settings import Settings
from tests.app.support import CATEGORIES, NEEDS_BROWSER, build_index, draw_line, make_gallery, served_page

pytestmark = NEEDS_BROWSER
PHONE = {"width": 390, "height": 844}
GRID_FILLED = "document.querySelectorAll('#grid img').length > 0"
STATUS_HAS = "text => document.getElementById('status').textContent.includes(text)"
IN_VIEW = """id => {  // the element's middle is on screen and it is what is drawn there (nothing covers it)
    const el = document.getElementById(id), r = el.getBoundingClientRect();
    const x = r.left + r.width / 2, y = r.top + r.height / 2;
    if (r.height === 0 || y < 0 || y > innerHeight) return false;
    return el.contains(document.elementFromPoint(x, y));
}"""


def test_an_unreachable_service_clears_the_results_and_says_so(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, {"width": 1100, "height": 760}) as (page, base):
        page.goto(base + "/")
        draw_line(page)
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        page.route(base + "/**", lambda route: route.abort("connectionrefused"))  # the service goes away
        page.select_option("#k", "10")  # the next search cannot reach it
        page.wait_for_selector("#error:not([hidden])")
        assert "cannot be reached" in page.inner_text("#error")
        assert page.locator("#grid .result").count() == 0  # no results pass for current ones
        assert "cannot be reached" in page.inner_text("#summary")
        page.unroute(base + "/**")  # back: the header's poll notices and the query on screen runs again
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        assert page.is_hidden("#error") and page.locator("#grid img").count() == 8


def test_the_header_tells_a_refused_index_from_none_and_follows_hot_reloads(app_encoder, tiny_encoder, tmp_path):
    gallery, index_dir = make_gallery(tmp_path / "gallery", per_category=2), tmp_path / "index"
    app = create_app(Settings(index_dir=index_dir, reload_interval_s=0.2), encoder=app_encoder)
    with served_page(app, {"width": 1100, "height": 760}) as (page, base):
        page.goto(base + "/")
        page.wait_for_function(STATUS_HAS, arg="no index loaded yet")
        build_index(gallery, index_dir, tiny_encoder)  # built with another encoder: refused by the service
        page.wait_for_function(STATUS_HAS, arg="index refused", timeout=20_000)
        assert "another encoder" in page.inner_text("#status")

        build_index(gallery, index_dir, app_encoder, rebuild=True)
        page.wait_for_function(STATUS_HAS, arg="4 photos", timeout=20_000)
        assert "refused" not in page.inner_text("#status")
        assert page.locator("#category option").all_inner_texts() == ["all", *CATEGORIES]
        page.select_option("#category", "boat")
        first = page.inner_text("#status").split(" · ")[0]

        make_gallery(gallery, categories=("cactus",), per_category=2, seed=50)  # a hot reload with a new category
        build_index(gallery, index_dir, app_encoder)
        page.wait_for_function(STATUS_HAS, arg="6 photos", timeout=20_000)  # without any search from the page
        assert page.inner_text("#status").split(" · ")[0] != first
        assert page.locator("#category option").all_inner_texts() == ["all", *CATEGORIES, "cactus"]
        assert page.input_value("#category") == "boat"  # the user's choice stays

        build_index(gallery, index_dir, tiny_encoder, rebuild=True)  # a newer version refused: the old one serves
        page.wait_for_function(STATUS_HAS, arg="refused", timeout=20_000)
        assert "6 photos" in page.inner_text("#status")


def test_the_error_banner_stays_in_sight_beside_the_api_key_prompt(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1], api_key="page-key-0123456789abcdef"), encoder=app_encoder)
    with served_page(app, PHONE) as (page, base):
        page.goto(base + "/")
        page.wait_for_selector("#key-field:not([hidden])")
        assert page.evaluate(IN_VIEW, "error") and page.evaluate(IN_VIEW, "key-field")
        assert "API key" in page.inner_text("#error")
        page.fill("#api-key", "wrong-key-0123456789abcdef")
        page.press("#api-key", "Enter")
        page.wait_for_function("document.getElementById('error').textContent.includes('not accepted')")
        draw_line(page)
        page.wait_for_function("document.getElementById('summary').textContent.includes('API-Key')",
                               timeout=20_000)
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # scrolled down to the results ...
        assert page.evaluate(IN_VIEW, "error")  # ... the banner is still in sight, over everything
        assert page.evaluate(IN_VIEW, "summary")


def test_on_a_phone_a_button_points_to_the_results_below_the_fold(app_index, app_encoder, tmp_path):
    shots = Path(os.environ.get("SBIR_ARTIFACTS_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, PHONE) as (page, base):
        page.goto(base + "/")
        page.wait_for_function(STATUS_HAS, arg="8 photos")
        assert page.is_hidden("#to-results") and page.is_hidden("#key-field")  # no key set: no key prompt
        draw_line(page)
        page.wait_for_function(GRID_FILLED, timeout=20_000)
        assert not page.evaluate(IN_VIEW, "grid")  # the results came out of sight ...
        page.wait_for_selector("#to-results:not([hidden])")
        assert page.evaluate(IN_VIEW, "to-results") and page.inner_text("#to-results") == "↓ 8 results"
        page.screenshot(path=str(shots / "page-phone.png"))
        page.click("#to-results")  # ... the button brings them in
        page.wait_for_function("document.getElementById('to-results').hidden")
        page.wait_for_function("document.getElementById('summary').getBoundingClientRect().top < innerHeight / 2")
        page.screenshot(path=str(shots / "page-phone-results.png"))
