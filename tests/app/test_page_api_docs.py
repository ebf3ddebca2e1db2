"""/docs (Swagger UI) and /redoc render in Chromium with every request off this host refused: their assets come
from the service itself (fastapi-offline's packaged copy), not from a CDN."""

from __future__ import annotations

from urllib.parse import urlsplit

from app.main import create_app
from app.settings import Settings
from tests.app.support import NEEDS_BROWSER, served_page

pytestmark = NEEDS_BROWSER


def offline(page) -> list[tuple[str, str]]:
    """Abort every request that does not go to the loopback service; returns the refused (resource type, URL)."""
    refused: list[tuple[str, str]] = []

    def route(route):
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            refused.append((route.request.resource_type, url))
            route.abort("internetdisconnected")

    page.route("**/*", route)
    return refused


def test_swagger_ui_and_redoc_render_without_internet(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with served_page(app, {"width": 1200, "height": 900}) as (page, base):
        refused = offline(page)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto(base + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)  # Swagger UI drew the operations
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert {"/search", "/info", "/photos/{photo_id}"} <= {p.replace("\u200b", "") for p in paths}, paths

        page.goto(base + "/redoc")
        page.wait_for_selector("h1", timeout=20_000)  # ReDoc drew the API's title and its operations
        assert "sketch-search" in page.inner_text("h1")
        page.wait_for_function("document.body.innerText.includes('/search')", timeout=20_000)
        assert not errors, errors
        # No script, style sheet or font was asked of the internet; ReDoc's sidebar links its maker's logo (an
        # <img> it has no option to drop), which stays blank offline.
        assert all(kind == "image" for kind, _ in refused), refused
