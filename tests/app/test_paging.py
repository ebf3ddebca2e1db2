"""Paging (offset + k, bounded by SBIR_MAX_RESULTS, has_more) and the details each result carries."""

from __future__ import annotations

import re

import numpy as np

from app.search import Query, page
from tests.app.support import STROKES, app_client


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def test_pages_in_a_stable_order_add_up_to_one_long_search(app_index, app_encoder):
    with app_client(app_index[1], app_encoder) as client:
        whole = client.post("/search", json={**STROKES, "k": 8}).json()
        assert whole["has_more"] is False and len(whole["results"]) == 8  # the gallery holds 8 photos
        pages = [client.post("/search", json={**STROKES, "k": 3, "offset": offset}).json() for offset in (0, 3, 6)]
        assert [r["id"] for p in pages for r in p["results"]] == [r["id"] for r in whole["results"]]
        assert [(p["offset"], p["has_more"], len(p["results"])) for p in pages] == [(0, True, 3), (3, True, 3),
                                                                                   (6, False, 2)]
        scores = [r["score"] for p in pages for r in p["results"]]
        assert scores == sorted(scores, reverse=True)
        # the same fields in the query string and a form; past the end: an empty last page
        assert _ids(client.post("/search?offset=3&k=3", json=STROKES)) == [r["id"] for r in pages[1]["results"]]
        beyond = client.post("/search", json={**STROKES, "k": 3, "offset": 20}).json()
        assert beyond["results"] == [] and beyond["has_more"] is False
        # a liked photo is left out of every page, and the pages still add up
        like = whole["results"][0]["id"]
        liked = [_ids(client.post("/search", json={"like": like, "k": 4, "offset": o})) for o in (0, 4)]
        assert like not in liked[0] + liked[1] and len(set(liked[0] + liked[1])) == 7


def test_offset_plus_k_is_bounded_by_max_results(app_index, app_encoder):
    with app_client(app_index[1], app_encoder, max_results=5) as client:
        at_bound = client.post("/search", json={**STROKES, "k": 2, "offset": 3}).json()
        assert len(at_bound["results"]) == 2 and at_bound["has_more"] is False  # more exist, none may be asked for
        refused = client.post("/search", json={**STROKES, "k": 2, "offset": 4})
        assert refused.status_code == 422 and refused.json()["error"] == "bad_offset"
        assert "SBIR_MAX_RESULTS" in refused.json()["detail"]
        for bad in (-1, "two", 1.5, True):
            answer = client.post("/search", json={**STROKES, "offset": bad})
            assert answer.status_code == 422 and answer.json()["error"] == "bad_offset", bad


def test_equal_scores_are_ordered_by_id_so_pages_never_swap_them():
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1], dtype=np.float32)
    ids = np.array([7, 3, 2, 5, -1])
    first, more = page(Query(k=2, category=None), scores, ids)
    second, after = page(Query(k=2, category=None, offset=2), scores, ids)
    assert [i for i, _ in first + second] == [3, 2, 5, 7] and more and not after


def test_results_say_where_the_photo_lies_and_its_size_and_time(app_index, app_encoder):
    gallery, index_dir = app_index
    with app_client(index_dir, app_encoder) as client:
        results = client.post("/search", json={**STROKES, "k": 8}).json()["results"]
    for result in results:
        file = gallery / result["path"]
        assert result["path"] == f"{result['category']}/{file.name}" and file.is_file()
        assert result["file_size"] == file.stat().st_size
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result["modified_at"])
        assert {"width", "height", "taken_at"} <= result.keys()
    with app_client(index_dir, app_encoder, hide_paths=True) as client:
        hidden = client.post("/search", json={**STROKES, "k": 8}).json()["results"]
    assert all(r["path"] is None for r in hidden) and all(r["file_size"] for r in hidden)
