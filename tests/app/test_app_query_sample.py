"""SBIR_QUERY_SAMPLE: a bounded, uniform sample of query vectors, saved for `index_builder tune`."""

from __future__ import annotations

import numpy as np

from app.query_sample import QuerySample
from photo_index.backends.folder.calibration import load_queries
from tests.app.support import STROKES, app_client

SECRET = "query-sample-admin-key"
KEY = {"X-API-Key": SECRET}  # an admin key (SBIR_ADMIN_KEYS): the admin routes' own key set


def test_the_reservoir_is_bounded_and_keeps_every_query_equally_likely():
    kept = np.zeros(100)
    for trial in range(200):
        sample = QuerySample(10, 2, seed=trial)
        for i in range(0, 100, 7):  # offered in batches of several vectors, as the micro-batcher does
            batch = np.arange(i, min(i + 7, 100), dtype=np.float32)
            sample.add(np.stack([batch, -batch], axis=1))
        rows = sample.snapshot()
        assert len(sample) == len(rows) == 10 and sample.seen == 100
        assert len(set(rows[:, 0].tolist())) == 10 and (rows[:, 1] == -rows[:, 0]).all()
        kept[rows[:, 0].astype(int)] += 1
    share = kept / 200
    assert share.min() > 0.02 and share.max() < 0.25 and abs(share.mean() - 0.1) < 1e-9  # uniform: 10 of 100


def test_the_service_saves_its_query_sample_by_the_admin_endpoint_and_on_shutdown(app_index, app_encoder, tmp_path):
    path = tmp_path / "sample" / "queries.npy"
    with app_client(app_index[1], app_encoder, query_sample=4, query_sample_path=path, admin_keys=SECRET) as client:
        for _ in range(3):
            assert client.post("/search", json=STROKES).status_code == 200
        assert client.post("/admin/query-sample").status_code == 401
        saved = client.post("/admin/query-sample", headers=KEY)
        assert saved.status_code == 200 and saved.json() == {"vectors": 3, "seen": 3, "capacity": 4}
        assert load_queries(path, app_encoder.embed_dim).shape == (3, app_encoder.embed_dim)
        for _ in range(3):
            assert client.post("/search", json=STROKES).status_code == 200
    # On shutdown the sample is written again: bounded at 4 of the 6 queries seen, unit vectors of the encoder.
    vectors = load_queries(path, app_encoder.embed_dim)
    assert vectors.shape == (4, app_encoder.embed_dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
    assert not list(path.parent.glob(".*.tmp"))


def test_the_admin_endpoint_is_off_without_an_admin_key_and_without_a_sample(app_index, app_encoder, tmp_path):
    with app_client(app_index[1], app_encoder, query_sample=4, query_sample_path=tmp_path / "q.npy") as client:
        refused = client.post("/admin/query-sample", headers=KEY)
        assert refused.status_code == 403 and "SBIR_ADMIN_KEYS" in refused.json()["detail"]
    with app_client(app_index[1], app_encoder, admin_keys=SECRET) as client:
        off = client.post("/admin/query-sample", headers=KEY)
        assert off.status_code == 409 and "SBIR_QUERY_SAMPLE" in off.json()["detail"]
    assert not (tmp_path / "q.npy").exists()  # nothing searched: nothing saved on shutdown


def test_a_sample_that_cannot_be_written_is_a_clear_refusal_and_the_service_goes_on(app_index, app_encoder, tmp_path):
    taken = tmp_path / "taken.npy"
    taken.mkdir()  # the rename over a folder fails, as a read-only or vanished folder would
    with app_client(app_index[1], app_encoder, query_sample=4, query_sample_path=taken, admin_keys=SECRET) as client:
        assert client.post("/search", json=STROKES).status_code == 200
        refused = client.post("/admin/query-sample", headers=KEY)
        assert refused.status_code == 409 and refused.json()["error"] == "query_sample_not_writable"
        assert "SBIR_QUERY_SAMPLE_PATH" in refused.json()["detail"] and str(tmp_path) not in refused.json()["detail"]
        assert client.post("/search", json=STROKES).status_code == 200
    assert taken.is_dir() and not list(tmp_path.glob(".*.tmp"))
