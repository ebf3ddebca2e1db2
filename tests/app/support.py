"""Helpers of the app tests: a tiny gallery, a real index built by index_builder, a served app."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.main import create_app
from app.server import server_options
from app.settings import Settings
from index_builder.builder import BuildOptions
from index_builder.builder import build_index as build_index_with
from tests.imagegen import draw_sketch, random_photo

REPO = Path(__file__).resolve().parents[2]
CATEGORIES = ("apple", "boat")
TINY_ENV = {"SBIR_BACKBONE": "sbir-tiny", "SBIR_PRETRAINED": "none", "HF_HUB_OFFLINE": "1"}

# Debian's Chromium driven by Playwright (never `playwright install`: no browser downloads here).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REQUIRE_BROWSER = "SBIR_REQUIRE_BROWSER"  # "1" (set by .ci/run): a missing browser fails the page tests
NEEDS_BROWSER = [pytest.mark.browser, pytest.mark.usefixtures("browser_available")]


def browser_missing() -> str | None:
    """Why the page tests cannot drive a browser here, or None when they can."""
    if not CHROMIUM.exists():
        return f"Debian's chromium is not installed at {CHROMIUM} (.ci/run installs it)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (it comes with `pip install -e '.[dev]'`)"
    return None


def require_browser() -> None:
    """Skip a page test when there is no browser; fail it instead under SBIR_REQUIRE_BROWSER=1 (CI never skips)."""
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{reason}; {REQUIRE_BROWSER}=1 forbids skipping the browser tests", pytrace=False)
    pytest.skip(reason)




def make_gallery(root: Path, categories=CATEGORIES, per_category: int = 4, seed: int = 0) -> Path:
    """Random JPEG photos in one folder per category."""
    for c, category in enumerate(categories):
        (root / category).mkdir(parents=True, exist_ok=True)
        for i in range(per_category):
            random_photo((96, 72), seed=seed + 100 * c + i).save(root / category / f"{category}-{seed + i}.jpg")
    return root


def build_index(gallery: Path, index_dir: Path, encoder, rebuild: bool = False) -> None:
    """Build (or incrementally update) an index with the real index_builder, in-process (fast)."""
    report = build_index_with(encoder, BuildOptions(index_dir=index_dir, gallery=gallery, workers=0, faiss_device="cpu",
                                                    progress=False, rebuild=rebuild))
    assert report.status in ("built", "unchanged"), report


@contextlib.contextmanager
def app_client(index_dir: Path, encoder, **settings) -> Iterator[TestClient]:
    app = create_app(Settings(index_dir=index_dir, reload_interval_s=0.2, **settings), encoder=encoder)
    with TestClient(app) as client:
        yield client


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Run `app` in a real uvicorn on a free loopback port (in a thread); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = server_options(app.state.settings, app.state.metrics)  # as `python -m app` runs
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextlib.contextmanager
def loopback_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded http.server on 127.0.0.1 answering with ``handler`` (a stand-in for a proxy or a broken server);
    yields its URL and stops it after."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset after the answer counts as a close)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def hammer(base: str, outcomes: list, stop: threading.Event, body: dict, pause_s: float = 0.01) -> None:
    """POST /search with ``body`` until ``stop``; appends (start time, status, index version or error text)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = client.post("/search", json=body)
                version = response.json().get("index_version") if response.status_code == 200 else response.text
                outcomes.append((started, response.status_code, version))
            except httpx.HTTPError as error:  # a dropped connection counts as a failure
                outcomes.append((started, -1, repr(error)))
            time.sleep(pause_s)  # leave the two CPU cores some room for the build


def sketch_png(seed: int = 0) -> bytes:
    out = io.BytesIO()
    draw_sketch(seed=seed).save(out, "PNG")
    return out.getvalue()


STROKES = {"strokes": [[[10, 10], [60, 80], [120, 20]], [[30, 90], [90, 95]]]}


@contextlib.contextmanager
def served_page(app, viewport: dict[str, int]):
    """`app` on a real uvicorn and a fresh page of Debian's Chromium (driven by Playwright): yields (page, base URL)."""
    require_browser()
    from playwright import sync_api
    with serve(app) as base, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport=viewport), base
        finally:
            browser.close()


def draw_line(page) -> tuple[float, float, float]:
    """Drag one stroke across the page's canvas with the mouse; returns the canvas's (x, y, width)."""
    box = page.locator("#canvas").bounding_box()
    x0, y0, w = box["x"], box["y"], box["width"]
    page.mouse.move(x0 + 0.2 * w, y0 + 0.3 * w)
    page.mouse.down()
    page.mouse.move(x0 + 0.8 * w, y0 + 0.6 * w, steps=8)
    page.mouse.up()
    return x0, y0, w
