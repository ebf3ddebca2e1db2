"""A photo deleted from the gallery after indexing: the 404 says the file is gone and how to re-index, and names
no server path."""

from __future__ import annotations

from pathlib import Path

from tests.app.support import app_client, build_index, make_gallery


def test_a_photo_deleted_since_indexing_is_a_404_that_says_so(tmp_path, app_encoder):
    gallery = make_gallery(tmp_path / "gallery", per_category=2)
    build_index(gallery, tmp_path / "index", app_encoder)
    with app_client(tmp_path / "index", app_encoder) as client:
        photo = client.post("/search", json={"text": "apple", "k": 1}).json()["results"][0]
        assert client.get(f"/photos/{photo['id']}").status_code == 200
        path = next(p for p in gallery.rglob("*.jpg") if client.get(f"/photos/{photo['id']}").content ==
                    p.read_bytes())
        path.unlink()
        for url in (f"/photos/{photo['id']}", f"/photos/{photo['id']}?size=64"):
            response = client.get(url)
            assert response.status_code == 404 and response.json()["error"] == "not_found"
            detail = response.json()["detail"]
            assert "gone from the gallery" in detail and "python -m index_builder build" in detail, detail
            assert str(Path(tmp_path)) not in detail and path.name not in detail
        assert client.get("/photos/99999").json()["detail"] == "Photo 99999 is not in the index."
