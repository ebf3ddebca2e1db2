"""Every error the service can answer is documented: in docs/app.md's error table (status and code) and, for the
search and photo routes, in the OpenAPI schema with the error model."""

from __future__ import annotations

import re

from app.main import create_app
from app.settings import Settings
from tests.app.support import REPO

APP = REPO / "app"
# The ways the app names a status and a code: APIError(422, "bad_k", ...), refuse(503, "busy", ...),
# `status, code = 414, "uri_too_long"`, (507, "disk_full"), {404: "not_found", ...}, and the handlers'
# JSONResponse(_body("index_refused", ...), status_code=502).
PAIR = re.compile(r'\b([1-5]\d\d)\s*[,:]\s*"([a-z][a-z0-9_]*)"')
HANDLER = re.compile(r'_body\("([a-z][a-z0-9_]*)".{0,200}?status_code=([1-5]\d\d)', re.DOTALL)


def codes_in_the_code() -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    for path in APP.rglob("*.py"):
        text = path.read_text()
        found |= {(int(status), code) for status, code in PAIR.findall(text)}
        found |= {(int(status), code) for code, status in HANDLER.findall(text)}
    return found


def error_table_rows() -> list[str]:
    """The last cell of each row of docs/app.md's error table."""
    text = (REPO / "docs" / "app.md").read_text()
    table = text.split("| Cause | Status, `error` |", 1)[1].split("\n\n", 1)[0]
    return [line.rstrip(" |").rsplit("|", 1)[1] for line in table.splitlines()[1:] if line.startswith("|")]


def test_the_code_scan_finds_the_known_errors():
    found = codes_in_the_code()
    assert {(422, "bad_k"), (503, "busy"), (414, "uri_too_long"), (507, "disk_full"), (405, "method_not_allowed"),
            (502, "index_refused"), (503, "index_unavailable"), (422, "invalid_request")} <= found
    assert len(found) > 40


def test_every_error_code_is_in_the_docs_table_with_its_status():
    rows = error_table_rows()
    missing = sorted(f"{status} {code}" for status, code in codes_in_the_code()
                     if not any(f"`{code}`" in row and str(status) in row for row in rows))
    assert not missing, f"docs/app.md's error table lacks: {missing}"


def test_openapi_lists_every_status_of_search_and_photos(tmp_path, app_encoder):
    schema = create_app(Settings(index_dir=tmp_path), encoder=app_encoder).openapi()
    error = {"$ref": "#/components/schemas/Error"}
    search = schema["paths"]["/search"]["post"]["responses"]
    for status in (400, 401, 403, 408, 413, 415, 422, 502, 503):
        assert search[str(status)]["content"]["application/json"]["schema"] == error, status
    photos = schema["paths"]["/photos/{photo_id}"]["get"]["responses"]
    assert "image/*" in photos["200"]["content"] and "image/*" in photos["206"]["content"]
    for status in (401, 403, 404, 416, 422, 502, 503):
        assert photos[str(status)]["content"]["application/json"]["schema"] == error, status
