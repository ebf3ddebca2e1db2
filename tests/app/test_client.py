"""The Python client (clients/python) and its CLI, against the real service on a loopback uvicorn."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tomllib

import pytest
from sketch_search_client import AsyncClient, AuthError, Client, InputError, SearchPage, ServiceError
from sketch_search_client.cli import DEFAULT_URL
from sketch_search_client.cli import _parser as cli_parser
from sketch_search_client.protocol import build_status as build_status_call
from sketch_search_client.protocol import photo as photo_call
from sketch_search_client.protocol import search as search_call
from sketch_search_client.protocol import upload_photos as upload_call

from app.main import create_app
from app.settings import Settings
from tests.app.support import REPO, STROKES, serve, sketch_png
from tests.imagegen import draw_sketch

KEY = "client-test-search-key"
CLIENT_DIR = REPO / "clients" / "python"


@pytest.fixture(scope="module")
def service(app_index, app_encoder):
    """The test gallery's index served by a real uvicorn, with a search key; yields its URL."""
    gallery, index_dir = app_index
    app = create_app(Settings(index_dir=index_dir, api_key=KEY, reload_interval_s=0.2), encoder=app_encoder)
    with serve(app) as base:
        yield base


def test_the_client_searches_with_every_kind_of_sketch_and_fetches_photos(service, app_index, tmp_path):
    sketch = sketch_png(3)
    path = tmp_path / "sketch.png"
    path.write_bytes(sketch)
    with Client(service, api_key=KEY) as client:
        assert client.ready() is True
        info = client.info()
        assert info.authorized and info.index_size == 8 and info.categories == ["apple", "boat"]
        by_bytes = client.search(sketch=sketch, k=3)
        assert isinstance(by_bytes, SearchPage) and by_bytes.query == "sketch" and len(by_bytes.results) == 3
        # a path, and a PIL image of the same drawing, are the same query
        assert [r.id for r in client.search(sketch=path, k=3).results] == [r.id for r in by_bytes.results]
        assert [r.id for r in client.search(sketch=draw_sketch(seed=3), k=3).results] == \
            [r.id for r in by_bytes.results]
        strokes = client.search(sketch=STROKES["strokes"], k=2, category="boat")
        assert strokes.category == "boat" and {r.category for r in strokes.results} == {"boat"}
        first = by_bytes.results[0]
        assert first.path is not None and first.path.startswith(f"{first.category}/") and first.file_size > 0
        photo, thumbnail = client.photo(first.id), client.thumbnail(first.id, size=32)
        assert photo == (app_index[0] / first.path).read_bytes() and thumbnail[:3] == b"\xff\xd8\xff"


def test_refusals_carry_the_services_error_code(service):
    with Client(service, api_key=KEY) as client:
        with pytest.raises(ServiceError) as refused:
            client.search(sketch=sketch_png(), k=0)
        assert (refused.value.status, refused.value.code) == (422, "bad_k")
        with pytest.raises(InputError):
            client.search(sketch=object())
    with Client(service, api_key="not-the-key-of-this-service") as client:
        with pytest.raises(AuthError) as unauthorized:
            client.search(sketch=STROKES)
        assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")
        assert client.info().authorized is False


def test_the_async_client_gives_the_sync_clients_answers(service):
    async def run():
        async with AsyncClient(service, api_key=KEY) as client:
            pages = await asyncio.gather(*(client.search(sketch=sketch_png(seed), k=4) for seed in range(3)))
            return await client.ready(), pages, await client.thumbnail(pages[0].results[0].id)

    ready, pages, thumbnail = asyncio.run(run())
    with Client(service, api_key=KEY) as client:
        expected = [[r.id for r in client.search(sketch=sketch_png(seed), k=4).results] for seed in range(3)]
    assert ready and [[r.id for r in page.results] for page in pages] == expected
    assert thumbnail[:3] == b"\xff\xd8\xff"


def test_search_arguments_are_checked_before_any_request():
    with pytest.raises(TypeError, match="kay"):
        search_call(sketch=b"x", kay=3)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CLIENT_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "sketch_search_client", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=CLIENT_DIR)


def test_the_cli_prints_a_table_or_json_and_downloads_the_photos(service, tmp_path):
    sketch = tmp_path / "sketch.png"
    sketch.write_bytes(sketch_png(5))
    table = _cli("--url", service, "--api-key", KEY, "query", str(sketch), "-k", "3", "--download",
                 str(tmp_path / "photos"))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["#", "id", "score", "category", "size", "path"] and len(lines) == 5
    assert "3 result(s), query sketch" in lines[-1] and "more: --offset 3" in lines[-1]
    saved = sorted((tmp_path / "photos").iterdir())
    assert len(saved) == 3 and all(p.read_bytes()[:3] == b"\xff\xd8\xff" for p in saved)

    as_json = _cli("--url", service, "--api-key", KEY, "query", str(sketch), "-k", "3", "--offset", "3", "--json")
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert answer["offset"] == 3 and len(answer["results"]) == 3
    ids = [line.split()[1] for line in lines[1:4]]
    assert not set(ids) & {str(r["id"]) for r in answer["results"]}  # the next page, not the same photos

    # the README's order: the global options after the command
    as_documented = _cli("query", str(sketch), "-k", "3", "--url", service, "--api-key", KEY, "--json")
    assert as_documented.returncode == 0, as_documented.stderr
    assert [r["id"] for r in json.loads(as_documented.stdout)["results"]] == [int(i) for i in ids[:3]]

    refused = _cli("--url", service, "--api-key", KEY, "query", str(sketch), "-k", "0")
    assert refused.returncode == 2 and "bad_k" in refused.stderr
    missing = _cli("--url", service, "query", str(tmp_path / "nothing.png"))
    assert missing.returncode == 2 and "cannot read the sketch" in missing.stderr
    unreachable = _cli("--url", "http://127.0.0.1:9", "--timeout", "5", "query", str(sketch))
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


@pytest.mark.parametrize("command", [["query", "cat.png", "-k", "10"], ["info"]], ids=["query", "info"])
def test_the_cli_takes_its_global_options_before_or_after_the_command(command, monkeypatch):
    monkeypatch.delenv("SKETCH_SEARCH_URL", raising=False)
    monkeypatch.delenv("SKETCH_SEARCH_API_KEY", raising=False)
    options = ["--url", "http://search.example:8000", "--api-key", "the-key", "--timeout", "7"]
    before, after = cli_parser().parse_args(options + command), cli_parser().parse_args(command + options)
    assert vars(before) == vars(after)
    assert (after.url, after.api_key, after.timeout) == ("http://search.example:8000", "the-key", 7.0)
    # left out after the command, an option keeps what was given before it; given after, it wins
    mixed = cli_parser().parse_args(["--url", "http://a:1", "--timeout", "3", *command, "--url", "http://b:2"])
    assert (mixed.url, mixed.api_key, mixed.timeout) == ("http://b:2", None, 3.0)
    monkeypatch.setenv("SKETCH_SEARCH_URL", "http://from-env:9")
    assert cli_parser().parse_args(command).url == "http://from-env:9"
    monkeypatch.setenv("SKETCH_SEARCH_URL", "")  # set but empty: the default (was "cannot reach the service at :")
    assert cli_parser().parse_args(command).url == DEFAULT_URL


def test_the_client_package_installs_and_imports_without_torch():
    blocked = ("import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None; "
               "import sketch_search_client; print(sorted(m for m in sys.modules if m in ('fastapi', 'app')))")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(CLIENT_DIR)}, cwd=CLIENT_DIR)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    project = tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())["project"]
    assert project["name"] == "sketch-search-client" and project["dependencies"] == ["httpx>=0.25"]


def test_what_the_client_cannot_send_is_its_input_error_before_any_request(tmp_path):
    refused = {
        "NaN in strokes": lambda: search_call(sketch=[[[0, 0], [float("nan"), 1]]]),
        "infinity in a strokes dict": lambda: search_call(sketch={"strokes": [[[0, 0], [1, float("inf")]]]}),
        "a lone surrogate in text": lambda: search_call(text="cat \ud800"),
        "... beside an image": lambda: search_call(sketch=sketch_png(), text="\udfff"),
        "nothing to search by": lambda: search_call(k=3, category="boat"),
        "a photo id of letters": lambda: photo_call("abc"),
        "a negative photo id": lambda: photo_call(-1),
        "a photo id in other digits": lambda: photo_call("١٢"),
        "a build id a URL would drop": lambda: build_status_call(".."),
        "no build id": lambda: build_status_call(""),
        "a missing photo file": lambda: upload_call([tmp_path / "missing.jpg"]),
    }
    for case, call in refused.items():
        with pytest.raises(InputError):
            call()
            pytest.fail(case)


def test_an_svg_drawing_is_sent_as_a_sketch(service, tmp_path):
    lines = "".join('<polyline points="' + " ".join(f"{x},{y}" for x, y in stroke) + '"/>'
                    for stroke in STROKES["strokes"])
    drawing = tmp_path / "cat.svg"
    drawing.write_text(f'<svg xmlns="http://www.w3.org/2000/svg"><g stroke="black" fill="none">{lines}</g></svg>')
    with Client(service, api_key=KEY) as client:
        expected = [r.id for r in client.search(sketch=STROKES, k=3).results]
        page = client.search(sketch=drawing, k=3)
    assert [r.id for r in page.results] == expected and page.query == "sketch"


def test_images_of_any_mode_are_sent_and_a_size_of_0_is_the_services_to_refuse(service):
    sketch = draw_sketch(seed=3)
    with Client(service, api_key=KEY) as client:
        expected = [r.id for r in client.search(sketch=sketch, k=3).results]
        for mode in ("CMYK", "LAB", "YCbCr"):  # PNG cannot hold these (a CMYK JPEG opened with Pillow is CMYK)
            assert [r.id for r in client.search(sketch=sketch.convert(mode), k=3).results] == expected, mode
        assert client.search(sketch=sketch.convert("L").convert("F"), k=3).results  # float pixels, 0..255
        assert client.photo(str(expected[0]))[:2]  # an id as the results print it
        with pytest.raises(ServiceError) as refused:
            client.thumbnail(expected[0], 0)
        assert refused.value.status == 422
