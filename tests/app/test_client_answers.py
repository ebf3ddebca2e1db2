"""The Python client against answers that are not the service's (a proxy's HTML page, a truncated or corrupt body,
JSON of another shape): each is an UnexpectedAnswerError naming what came back, never a raw JSONDecodeError or
KeyError; and what the CLI does with them and with the paths it downloads to."""

from __future__ import annotations

import asyncio
import http.server
from types import SimpleNamespace

import httpx
import pytest
from sketch_search_client import AsyncClient, Client, InputError, ServiceError, UnexpectedAnswerError
from sketch_search_client.cli import _file_name
from sketch_search_client.cli import main as cli_main

from tests.app.support import loopback_http

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

    with loopback_http(Handler) as url:
        yield url


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


@pytest.mark.parametrize("call", ["start_build", "upload_photos", "photo"])
def test_a_success_of_another_status_or_a_redirect_is_an_unexpected_answer_not_a_refusal(call):
    """A proxy's 200 page where the service answers 201/202 was 'ServiceError 200 http_200'; a redirect names where;
    a photo whose body is no image (a proxy's page) is never saved as one."""
    calls = {**CALLS, "photo": lambda client: client.photo(3)}
    with Client("http://sketch.test", transport=_transport(200, {"content-type": "text/html"}, HTML)) as client, \
            pytest.raises(UnexpectedAnswerError, match="502 Bad Gateway|not an image"):
        calls[call](client)
    moved = _transport(307, {"location": "https://sketch.test/v2/search"}, b"")
    with Client("http://sketch.test", transport=moved) as client, \
            pytest.raises(UnexpectedAnswerError, match="redirect to 'https://sketch.test/v2/search'"):
        calls[call](client)


def test_a_503_carries_the_wait_the_service_asked_for():
    from sketch_search_client import NotReadyError

    busy = _transport(503, {"retry-after": "2", "content-type": "application/json"},
                      b'{"error": "index_unavailable", "detail": "retry shortly"}')
    with Client("http://sketch.test", transport=busy) as client, pytest.raises(NotReadyError) as raised:
        client.search(text="a cat")
    assert raised.value.retry_after == 2.0 and raised.value.code == "index_unavailable"


def test_the_key_and_url_credentials_never_reach_a_message_and_a_padded_key_is_trimmed():
    seen = []

    def refuse(request):
        seen.append(request.headers["X-API-Key"])
        raise httpx.ConnectError(f"refused, with {request.headers['X-API-Key']} and {request.url}")

    from sketch_search_client import ServiceUnreachableError

    transport = httpx.MockTransport(refuse)
    with Client("http://user:pw@sketch.test", api_key="  s3cret-key  ", transport=transport) as client, \
            pytest.raises(ServiceUnreachableError) as raised:
        client.search(text="a cat")
    assert seen == ["s3cret-key"]
    message = str(raised.value)
    assert "s3cret" not in message and "pw" not in message and "***" in message and "sketch.test" in message
    for bad in (-1, 0, float("nan"), float("inf"), 1e10):  # 1e10 s: OverflowError from inside httpx's socket
        with pytest.raises(InputError, match="timeout"):
            Client("http://sketch.test", timeout=bad)


def test_sketch_files_and_strokes_that_are_no_strokes_are_input_errors(tmp_path):
    """A .json holding a string was read as a second path and that file uploaded; [1, 2, 3] was a TypeError."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the service")
    named = tmp_path / "q.json"
    named.write_text(f'"{secret}"')
    numbers = tmp_path / "n.json"
    numbers.write_text("[1, 2, 3]")
    sent = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(500))
    with Client("http://sketch.test", transport=transport) as client:
        for sketch in (named, numbers, [1, 2], ["ab"]):
            with pytest.raises(InputError, match="strokes"):
                client.search(sketch=sketch)
        with pytest.raises(InputError, match="not valid Unicode"):
            client.search(text="\ud800")
    assert not sent


def test_one_photo_given_alone_is_uploaded_as_one(tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"\xff\xd8\xff a photo")
    bodies = []

    def answer(request):
        bodies.append(request.read())
        return httpx.Response(201, json={"photos": [{"id": "x"}]})

    with Client("http://sketch.test", transport=httpx.MockTransport(answer)) as client:
        assert client.upload_photos(str(photo)) == [{"id": "x"}]
    assert bodies[0].count(b'name="photo"') == 1


def test_whole_floats_go_as_integers_in_a_form_and_a_strokes_file_may_start_with_a_bom(tmp_path):
    # k=2.0 worked with strokes (JSON) but was refused with an image (the form sent "2.0"); a .ndjson file saved
    # with a byte-order mark was refused by the client while the service reads it.
    sent = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"results": [], "k": 2, "query": "sketch", "index_version": "v1"})

    sketch = tmp_path / "drawing.ndjson"
    sketch.write_bytes(b'\xef\xbb\xbf{"drawing": [[[0, 10], [0, 10]]]}\n{"drawing": []}\n')
    notepad = tmp_path / "drawing.json"  # UTF-16 with its byte-order mark, as Windows Notepad may save it
    notepad.write_bytes('{"strokes": [[[0, 0], [5, 5]]]}'.encode("utf-16"))
    photo = tmp_path / "sketch.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    with Client("http://sketch.test", transport=httpx.MockTransport(answer)) as client:
        client.search(sketch=sketch, k=2.0)
        client.search(sketch=photo, k=2.0)
        client.search(sketch=notepad)
    assert b'"k": 2' in sent[0].content and b'"drawing"' in sent[0].content
    assert b'name="k"\r\n\r\n2\r\n' in sent[1].content
    assert b'"strokes": [[[0, 0], [5, 5]]]' in sent[2].content
