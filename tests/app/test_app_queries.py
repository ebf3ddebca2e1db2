"""Queries beyond a sketch: text, sketch + text, like (more like this), photo uploads; every combination and every
refusal, through the real app and a real index."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

from app.batching import MicroBatcher
from app.search import Query, SearchEngine, compose
from photo_index.backends.folder import IndexReader
from tests.app.support import STROKES, app_client, sketch_png
from tests.tolerance import f32_tol


@pytest.fixture(scope="module")
def client(app_index, app_encoder):
    with app_client(app_index[1], app_encoder) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def stored(app_index):
    """(ids, vectors, {id: record}) of the served index, read directly."""
    with IndexReader.open(app_index[1]) as reader:
        ids, vectors = reader.vectors()
        ids, vectors = np.array(ids), np.array(vectors)
        return ids, vectors, {r.id: r for r in reader.records(ids)}


def ranked(body: dict) -> list[tuple[int, float]]:
    return [(r["id"], r["score"]) for r in body["results"]]


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response, status: int, code: str, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and words in body["detail"], body


def form_text(client, text: bytes, **fields):
    """A multipart form whose `text` part holds exactly `text` (bytes, so non-UTF-8 can be sent)."""
    boundary = "queries-boundary"
    parts = [(b"text", text)] + [(name.encode(), str(value).encode()) for name, value in fields.items()]
    body = b"".join(b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n" % (boundary.encode(), n, v)
                    for n, v in parts) + b"--%s--\r\n" % boundary.encode()
    return client.post("/search", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


# ---- every combination ----------------------------------------------------------------------------
def test_text_alone_in_json_form_and_query_string(client):
    by_json = ok(client.post("/search", json={"text": "apple", "k": 4}))
    assert by_json["query"] == "text" and by_json["input"] is None and by_json["text"] == "apple"
    assert by_json["text_weight"] is None and len(by_json["results"]) == 4
    by_form = ok(client.post("/search", data={"text": "apple", "k": "4"}, files={"unused": ("x.txt", b"words")}))
    by_query = ok(client.post("/search?text=apple&k=4"))
    assert ranked(by_json) == ranked(by_form) == ranked(by_query)
    assert ranked(ok(client.post("/search", json={"text": "  apple\n"}))) == ranked(ok(client.post(
        "/search", json={"text": "apple"})))  # trimmed the same
    assert ranked(by_json) != ranked(ok(client.post("/search", json={"text": "a boat", "k": 4})))


def test_text_alone_ranks_by_the_text_tower_vector(client, app_encoder, stored):
    ids, vectors, _ = stored
    body = ok(client.post("/search", json={"text": "teddy_bear", "k": 8}))
    text = app_encoder.encode_text(["teddy bear"]).numpy()[0]
    want = ids[np.argsort(-(vectors @ text), kind="stable")]
    assert [i for i, _ in ranked(body)] == [int(i) for i in want]


def test_sketch_plus_text_is_the_weighted_sum_between_sketch_and_text(client):
    sketch = ok(client.post("/search", json={**STROKES, "k": 8}))
    text = ok(client.post("/search", json={"text": "boat", "k": 8}))
    composed = ok(client.post("/search", json={**STROKES, "text": "boat", "k": 8}))
    assert composed["query"] == "sketch+text" and composed["input"] == "strokes" and composed["text_weight"] == 0.3
    none = ok(client.post("/search", json={**STROKES, "text": "boat", "k": 8, "text_weight": 0}))
    full = ok(client.post("/search", json={**STROKES, "text": "boat", "k": 8, "text_weight": 1}))
    assert [i for i, _ in ranked(none)] == [i for i, _ in ranked(sketch)]
    assert [i for i, _ in ranked(full)] == [i for i, _ in ranked(text)]
    np.testing.assert_allclose([s for _, s in ranked(full)], [s for _, s in ranked(text)], atol=1e-4)
    assert composed["results"] and ranked(composed) not in (ranked(sketch), ranked(text))


def test_image_sketch_plus_text_in_a_form_and_a_raw_body(client):
    png = sketch_png(seed=4)
    form = ok(client.post("/search", files={"sketch": ("s.png", png, "image/png")},
                          data={"text": "apple", "text_weight": "0.5", "k": "3"}))
    raw = ok(client.post("/search?text=apple&text_weight=0.5&k=3", content=png,
                         headers={"Content-Type": "image/png"}))
    assert form["query"] == raw["query"] == "sketch+text" and form["text_weight"] == 0.5
    assert ranked(form) == ranked(raw) and len(form["results"]) == 3


def test_like_ranks_by_the_stored_vector_and_leaves_the_photo_out(client, stored):
    ids, vectors, _ = stored
    liked = int(ids[2])
    body = ok(client.post("/search", json={"like": liked, "k": 8}))
    assert body["query"] == "like" and body["like"] == liked and body["input"] is None
    order = [int(i) for i in ids[np.argsort(-(vectors @ vectors[2]), kind="stable")] if i != liked]
    assert [i for i, _ in ranked(body)] == order  # all 7 others, closest first
    assert ok(client.post(f"/search?like={liked}&k=8"))["results"] == body["results"]
    assert ok(client.post("/search", data={"like": str(liked), "k": "8"}))["results"] == body["results"]


def test_like_plus_text(client, stored):
    liked = int(stored[0][0])
    like = ok(client.post("/search", json={"like": liked, "k": 7}))
    composed = ok(client.post("/search", json={"like": liked, "text": "boat", "text_weight": 0.6, "k": 7}))
    assert composed["query"] == "like+text" and composed["text_weight"] == 0.6
    assert liked not in [i for i, _ in ranked(composed)]
    same = ok(client.post("/search", json={"like": liked, "text": "boat", "text_weight": 0, "k": 7}))
    assert [i for i, _ in ranked(same)] == [i for i, _ in ranked(like)]


def test_a_photo_upload_finds_itself_through_the_photo_branch(client, stored):
    ids, _, records = stored
    record = records[int(ids[5])]
    data = Path(record.path).read_bytes()
    body = ok(client.post("/search", files={"photo": ("p.jpg", data, "image/jpeg")}, data={"as": "photo"}))
    assert body["query"] == "photo" and body["input"] == "image"
    assert body["results"][0]["id"] == record.id and body["results"][0]["score"] > 0.999
    raw = ok(client.post("/search?as=photo", content=data, headers={"Content-Type": "image/jpeg"}))
    assert ranked(raw) == ranked(body)
    as_sketch = ok(client.post("/search", files={"photo": ("p.jpg", data, "image/jpeg")}))
    assert as_sketch["query"] == "sketch" and ranked(as_sketch) != ranked(body)
    composed = ok(client.post("/search", files={"sketch": ("p.jpg", data, "image/jpeg")},
                              data={"as": "photo", "text": "apple"}))
    assert composed["query"] == "photo+text"


@pytest.mark.parametrize("request_kwargs, kind", [
    ({"json": {"text": "apple"}}, "text"),
    ({"json": {**STROKES}}, "sketch"),
    ({"json": {**STROKES, "text": "apple"}}, "sketch+text"),
    ({"json": {"like": "FIRST"}}, "like"),
    ({"json": {"like": "FIRST", "text": "apple"}}, "like+text"),
    ({"files": {"sketch": ("p.png", "PHOTO", "image/png")}, "data": {"as": "photo"}}, "photo"),
    ({"files": {"sketch": ("p.png", "PHOTO", "image/png")}, "data": {"as": "photo", "text": "apple"}}, "photo+text"),
])
def test_every_kind_keeps_k_and_category(client, stored, request_kwargs, kind):
    ids, _, records = stored
    boat = [i for i in ids if records[int(i)].category == "boat"]
    request_kwargs = json.loads(json.dumps(request_kwargs).replace('"FIRST"', str(int(boat[0]))))
    if "files" in request_kwargs:
        request_kwargs["files"] = {"sketch": ("p.png", sketch_png(seed=9), "image/png")}
    if "json" in request_kwargs:
        request_kwargs["json"].update(k=2, category="boat")
    else:
        request_kwargs["data"].update(k="2", category="boat")
    body = ok(client.post("/search", **request_kwargs))
    assert body["query"] == kind and body["k"] == 2 and body["category"] == "boat"
    assert len(body["results"]) == 2 and {r["category"] for r in body["results"]} == {"boat"}


def test_info_and_openapi_name_the_query_kinds_and_fields(client):
    info = client.get("/info").json()
    assert set(info["query_kinds"]) == {"sketch", "photo", "like", "text", "sketch+text", "photo+text", "like+text"}
    assert info["text_weight"] == 0.3 and info["max_text_chars"] == 300
    spec = client.get("/openapi.json").json()["paths"]["/search"]["post"]
    json_fields = spec["requestBody"]["content"]["application/json"]["schema"]["properties"]
    form_fields = spec["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    query_fields = {p["name"] for p in spec["parameters"] if p["in"] == "query"}
    for name in ("text", "text_weight", "like", "as"):
        assert name in json_fields and name in form_fields and name in query_fields
        assert json_fields[name].get("description") and form_fields[name].get("description")
    assert json_fields["text_weight"]["minimum"] == 0 and json_fields["text_weight"]["maximum"] == 1
    assert "0.3" in json_fields["text_weight"]["description"] and '"maxLength": 300' in json.dumps(json_fields["text"])


def test_text_encoding_shares_the_micro_batch_with_sketches(app_encoder, app_index):
    """Concurrent text and sketch queries go through one batch: one image-tower and one text-tower call."""
    from app.index_holder import IndexHolder

    calls: list[str] = []

    class Counting(SearchEngine):
        def embed(self, tensors, modality="sketch"):
            calls.append(f"{modality}:{len(tensors)}")
            return super().embed(tensors, modality)

    original = app_encoder.encode_text

    def encode_text(texts):
        calls.append(f"text:{len(texts)}")
        return original(texts)

    index = IndexHolder(app_index[1], fingerprint=app_encoder.fingerprint(), dim=app_encoder.embed_dim)
    assert index.refresh()
    engine = Counting(app_encoder, index)
    tensor = app_encoder.preprocess.sketch_strokes(STROKES)
    queries = [Query(3, None, text="apple"), Query(3, None, tensor=tensor), Query(3, None, text="boat"),
               Query(3, None, tensor=tensor, text="boat")]

    async def main():
        batcher = MicroBatcher(engine.run_batch, max_batch=8, max_wait_ms=50)
        await batcher.start()
        with batcher.expecting():  # the batch waits for the whole burst, as it does for requests still decoding
            tasks = [asyncio.create_task(batcher.submit(q)) for q in queries]
            await asyncio.sleep(0.01)
        results = await asyncio.gather(*tasks)
        await batcher.stop()
        return results

    app_encoder.encode_text = encode_text
    try:
        results = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        del app_encoder.encode_text
        index.close()
    assert calls == ["sketch:2", "text:3"] and {r.batch_size for r in results} == {4}
    assert all(len(r.value.matches) == 3 for r in results)


def test_compose_is_the_normalised_weighted_sum():
    a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    tol = f32_tol(1.0)  # unit vectors in float32
    np.testing.assert_allclose(compose(a, b, 0.5), [2**-0.5, 2**-0.5], rtol=0, atol=tol)
    np.testing.assert_allclose(compose(a, b, 0.0), a, rtol=0, atol=tol)
    np.testing.assert_allclose(compose(None, b, 0.3), b, rtol=0, atol=tol)
    np.testing.assert_allclose(compose(a, -a, 0.5), a, rtol=0, atol=tol)  # cancelled out: the picture's direction stays


# ---- every refusal --------------------------------------------------------------------------------
@pytest.mark.parametrize("payload, code, words", [
    ({"text": ""}, "bad_text", "empty"),
    ({"text": " \t\n "}, "bad_text", "empty"),
    ({"text": "\u200b \u2060\ufeff"}, "bad_text", "empty"),  # only invisible format characters
    ({"text": "_"}, "bad_text", "empty"),  # searched the prompt with no words ("_" is a space in a class name)
    ({"text": " __ _ "}, "bad_text", "empty"),
    ({"text": "x" * 301}, "text_too_long", "300"),
    ({"text": 42}, "bad_text", "string"),
    ({"text": "apple", "text_weight": 1.5}, "bad_text_weight", "between 0 and 1"),
    ({"text": "apple", "text_weight": -0.1}, "bad_text_weight", "between 0 and 1"),
    ({"text": "apple", "text_weight": "heavy"}, "bad_text_weight", "number"),
    ({"text": "apple", "text_weight": True}, "bad_text_weight", "number"),
    ({"like": -1}, "bad_like", "0 or more"),
    ({"like": "first"}, "bad_like", "whole number"),
    ({"like": 1.5}, "bad_like", "whole number"),
    ({"like": 2**70}, "bad_like", "whole number"),
    ({"like": 10**9}, "unknown_photo", "not in the index"),
    ({**STROKES, "like": 0}, "like_with_sketch", "like"),
    ({**STROKES, "as": "photo"}, "photo_from_strokes", "as=photo"),
    ({"text": "apple", "as": "photo"}, "missing_photo", "photo"),
    ({"text": "apple", "as": "painting"}, "bad_as", "photo"),
])
def test_bad_query_fields_in_json_are_422(client, payload, code, words):
    refused(client.post("/search", json=payload), 422, code, words)


def test_bad_query_fields_in_forms_and_query_strings_are_422(client, stored):
    refused(client.post("/search", data={"text": "   "}), 422, "bad_text", "empty")
    # a multipart form's blank text alone (curl -F text=) was "missing_sketch", as if no text had been sent
    refused(client.post("/search", data={"text": ""}, files={"other": ("", b"", "text/plain")}), 422, "bad_text",
            "empty")
    refused(client.post("/search?text="), 422, "bad_text", "empty")
    refused(client.post("/search", data={"text": "apple", "text_weight": "nan"}), 422, "bad_text_weight", "0 and 1")
    refused(client.post("/search?text=apple&text_weight=inf"), 422, "bad_text_weight", "0 and 1")
    refused(client.post("/search?like=-3"), 422, "bad_like", "0 or more")
    refused(client.post("/search", data={"like": "999999"}), 422, "unknown_photo", "999999")
    liked = str(int(stored[0][0]))
    refused(client.post("/search", files={"sketch": ("s.png", sketch_png(), "image/png")}, data={"like": liked}),
            422, "like_with_sketch", "like")
    refused(client.post(f"/search?like={liked}", content=sketch_png(), headers={"Content-Type": "image/png"}),
            422, "like_with_sketch", "like")
    refused(client.post("/search", data={"strokes": json.dumps(STROKES), "as": "photo"}),
            422, "photo_from_strokes", "strokes")
    refused(client.post("/search", files={"sketch": ("s.json", json.dumps(STROKES).encode(), "application/json")},
                        data={"as": "photo"}), 422, "photo_from_strokes", "strokes")


def test_text_that_is_not_utf8_is_422_however_it_comes(client):
    refused(form_text(client, b"caf\xe9 \xff"), 422, "bad_text", "UTF-8")
    assert ok(form_text(client, "café".encode()))["text"] == "café"  # real UTF-8 is fine, accents and all
    refused(client.post("/search?text=%FF%FE"), 422, "bad_text", "UTF-8")
    refused(client.post("/search", content=b'{"text": "\\ud800"}', headers={"Content-Type": "application/json"}),
            422, "bad_text", "UTF-8")
    urlencoded = {"Content-Type": "application/x-www-form-urlencoded"}
    refused(client.post("/search", content="text=%C3%28", headers=urlencoded), 422, "bad_text", "UTF-8")


def test_a_refused_query_leaves_the_service_answering(client):
    for _ in range(3):
        refused(client.post("/search", json={"text": "x" * 1000}), 422, "text_too_long", "300")
    assert ok(client.post("/search", json={"text": "apple"}))["results"]
    metrics = client.get("/metrics").text
    assert 'sbir_queries_total{kind="text"}' in metrics and 'sbir_errors_total{type="text_too_long"}' in metrics


def test_an_encoder_without_a_text_tower_says_so_and_refuses_text(app_index, app_encoder, monkeypatch):
    monkeypatch.setattr(app_encoder, "tokenizer", None)  # as an image-only open_clip model would load
    with app_client(app_index[1], app_encoder) as image_only:
        assert set(image_only.get("/info").json()["query_kinds"]) == {"sketch", "photo", "like"}
        refused(image_only.post("/search", json={"text": "apple"}), 422, "text_unsupported", "text tower")
        assert ok(image_only.post("/search", json=STROKES))["query"] == "sketch"


def test_text_settings_come_from_env_and_flags_and_apply(app_index, app_encoder, monkeypatch):
    from app.__main__ import build_parser
    from app.settings import Settings

    args = build_parser().parse_args(["--text-weight", "0.6", "--max-text-chars", "12"])
    assert (args.text_weight, args.max_text_chars) == (0.6, 12)
    monkeypatch.setenv("SBIR_TEXT_WEIGHT", "0.6")
    monkeypatch.setenv("SBIR_MAX_TEXT_CHARS", "12")
    assert (Settings().text_weight, Settings().max_text_chars) == (0.6, 12)
    monkeypatch.setenv("SBIR_TEXT_WEIGHT", "1.5")
    with pytest.raises(ValueError, match="text_weight"):
        Settings()
    with app_client(app_index[1], app_encoder, text_weight=0.6, max_text_chars=12) as configured:
        assert ok(configured.post("/search", json={**STROKES, "text": "apple"}))["text_weight"] == 0.6
        refused(configured.post("/search", json={"text": "a" * 13}), 422, "text_too_long", "12")


def test_a_batch_searches_each_depth_on_its_own(app_index, app_encoder):
    # One search at the batch's deepest k made a first page's results depend on a later page's request beside it
    # (HNSW, in FAISS or Milvus, searches deeper for a larger k).
    from app.index_holder import IndexHolder

    index = IndexHolder(app_index[1], fingerprint=app_encoder.fingerprint(), dim=app_encoder.embed_dim)
    assert index.refresh()
    searched = []
    real_lease = index.lease

    class Recording:
        def __init__(self, reader):
            self._reader = reader

        def __getattr__(self, name):
            return getattr(self._reader, name)

        def search(self, vectors, k, category=None):
            searched.append((len(vectors), k))
            return self._reader.search(vectors, k, category=category)

    @contextlib.contextmanager
    def lease():
        with real_lease() as reader:
            yield Recording(reader)

    index.lease = lease
    tensor = app_encoder.preprocess.sketch_strokes(STROKES)
    try:
        SearchEngine(app_encoder, index).run_batch([Query(3, None, tensor=tensor), Query(3, None, tensor=tensor),
                                                    Query(3, None, tensor=tensor, offset=3)])
    finally:
        index.close()
    assert sorted(searched) == [(1, 7), (2, 4)]
