"""The Python client against answers that are not the service's (a proxy's HTML page, a truncated or corrupt body,
JSON of another shape): each is an UnexpectedAnswerError naming what came back, never a raw JSONDecodeError or
KeyError; and what the CLI does with them and with the paths it downloads to."""

from __future__ import annotations

import asyncio
import http.server
import threading
from types import SimpleNamespace

import httpx
import pytest
from sketch_search_client import AsyncClient, Client, InputError, ServiceError, UnexpectedAnswerError
from sketch_search_client.cli import _file_name
from sketch_search_client.cli import main as cli_main

HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
ANSWERS = {  # name: (status, headers, body)
    "a proxy's HTML page": (200, {"content-type": "text/html"}, HTML),
    "truncated JSON": (200, {"content-type": "application/json"}, b'{"results": [{"id": 1, "sco'),
    "an empty object": (200, {"content-type": "application/json"}, b"{}"),
    "a list": (200, {"content-type": "application/json"}, b"[1]"),
    "not UTF-8": (200, {"content-type": "application/json"}, b"\xff\xfe\x00garbage"),
}
CALLS = {
    "search": lambda client: client.search(text="a cat"),
    "info": lambda client: client.info(),
    "build_status": lambda client: client.build_status("b1"),
    "start_build": lambda client: client.start_build(),
    "upload_photos": lambda client: client.upload_photos([b"\xff\xd8\xff photo"]),
}
SUCCESS = {"start_build": 202, "upload_photos": 201}


def _transport(status: int, headers: dict, body: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, headers=headers, content=body))


# /info's fields all have defaults (an unauthorised /info is nearly empty), so {} reads as an /info answer.
CASES = [(call, answer) for call in CALLS for answer in ANSWERS if (call, answer) != ("info", "an empty object")]


@pytest.mark.parametrize(("call", "answer"), CASES)
def test_an_answer_that_is_not_the_services_is_an_unexpected_answer_error(call, answer):
    status, headers, body = ANSWERS[answer]
    status = SUCCESS.get(call, status)
    with Client("http://sketch.test", transport=_transport(status, headers, body)) as client, \
            pytest.raises(UnexpectedAnswerError) as raised:
        CALLS[call](client)
    error = raised.value
    assert isinstance(error, ServiceError) and error.status == status and error.code == "unexpected_answer"
    if answer == "a proxy's HTML page":
        assert "502 Bad Gateway" in error.detail  # the body's start says what answered instead


def test_the_async_client_reads_answers_alike():
    async def run():
        async with AsyncClient("http://sketch.test", transport=_transport(200, {}, HTML)) as client:
            await client.search(text="a cat")

    with pytest.raises(UnexpectedAnswerError):
        asyncio.run(run())


def test_a_body_that_cannot_be_decompressed_is_an_unexpected_answer_error():
    corrupt = _transport(200, {"content-encoding": "gzip", "content-type": "application/json"},
                         b"\x1f\x8b\x08\x00" + bytes(range(40)))  # a gzip header, then no deflate stream
    with Client("http://sketch.test", transport=corrupt) as client, pytest.raises(UnexpectedAnswerError) as raised:
        client.info()
    assert "could not be read" in raised.value.detail


@pytest.mark.parametrize("key", ["clé-secrète", "key\nX-Other: 1", "key\x00"])
def test_a_key_that_no_header_can_carry_is_an_input_error_before_any_request(key):
    with pytest.raises(InputError, match="printable ASCII"):
        Client("http://sketch.test", api_key=key)


@pytest.fixture()
def html_proxy():
    """A loopback HTTP server that answers every request with a 200 HTML page (a captive portal, a proxy)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(HTML)))
            self.end_headers()
            self.wfile.write(HTML)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_the_cli_names_an_unexpected_answer_and_exits_2(html_proxy, capsys):
    assert cli_main(["--url", html_proxy, "info"]) == 2
    err = capsys.readouterr().err
    assert "unexpected_answer" in err and "Traceback" not in err


@pytest.mark.parametrize(("path", "name"), [
    ("cat/cat_1.jpg", "7-cat_1.jpg"),
    ("a/..\\..\\..\\evil.exe", "7-evil.exe"),  # Windows separators: never outside the download folder
    ("..", "7.png"), ("a/...", "7.png"), ("", "7.png"), (None, "7.png"),
    ("a/x:y?.jpg", "7-x_y_.jpg"), ("a/ .hidden.jpg", "7-hidden.jpg"), ("a/b\x1b[2J.jpg", "7-b_[2J.jpg"),
])
def test_downloaded_photos_are_named_inside_the_folder_on_any_system(path, name):
    assert _file_name(SimpleNamespace(id=7, path=path), b"\x89PNG\r\n\x1a\n") == name
