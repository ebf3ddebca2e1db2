"""bench/serve.py's cheap load generator speaks the same HTTP as the httpx client it replaces: its pre-built request
is a multipart search Starlette reads as such, and responses are read by their Content-Length, back to back."""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartParser

from bench.serve import _read_response, multipart_search

SKETCH = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # any bytes: CRLFs and dashes included


async def _stream(data: bytes):
    yield data


def test_the_prebuilt_request_is_a_multipart_search():
    raw = multipart_search("127.0.0.1:8000", SKETCH, {"k": "10"})
    head, body = raw.split(b"\r\n\r\n", 1)
    request_line, *header_lines = head.decode().split("\r\n")
    headers = Headers({name.strip(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)})
    assert request_line == "POST /search HTTP/1.1" and int(headers["content-length"]) == len(body)
    form = asyncio.run(MultiPartParser(headers, _stream(body)).parse())
    assert form["k"] == "10"
    upload = form["sketch"]
    assert upload.filename == "s.png" and upload.content_type == "image/png"
    assert asyncio.run(upload.read()) == SKETCH


def test_responses_are_read_by_content_length_one_after_another():
    first = b'{"batch_size": 3, "index_version": "v1"}'
    stream = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(first), first)
              + b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    async def read_both():
        reader = asyncio.StreamReader()
        reader.feed_data(stream)
        reader.feed_eof()
        return await _read_response(reader), await _read_response(reader)

    assert asyncio.run(read_both()) == ((200, first, True), (503, b"{}", False))
