"""Settings from SBIR_* environment variables and `python -m app` flags; upload sniffing and k parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.__main__ import build_parser
from app.errors import APIError
from app.inputs import parse_k, sniff_image_type
from app.photos import safe_photo_path
from app.settings import Settings
from photo_index import PhotoRecord


def test_defaults_follow_the_contract(monkeypatch):
    for name in ("SBIR_INDEX_DIR", "SBIR_MAX_BATCH", "HOST", "PORT", "SBIR_API_KEY", "SBIR_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.index_dir == Path("index") and settings.device == "auto"
    assert (settings.max_batch, settings.max_wait_ms, settings.max_k) == (32, 5.0, 100)
    assert settings.max_upload_bytes == 10 * 1024 * 1024 and settings.reload_interval_s == 2.0
    assert settings.port == 8000 and settings.api_key is None and settings.cors_origin_list == []


def test_environment_variables_configure_everything(monkeypatch):
    monkeypatch.setenv("SBIR_INDEX_DIR", "/srv/index")
    monkeypatch.setenv("SBIR_MAX_BATCH", "8")
    monkeypatch.setenv("SBIR_MAX_WAIT_MS", "2.5")
    monkeypatch.setenv("SBIR_API_KEY", "hush-hush-hush-hush")
    monkeypatch.setenv("SBIR_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("SBIR_GALLERY_ROOT", "")
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("HOST", "0.0.0.0")
    settings = Settings()
    assert settings.index_dir == Path("/srv/index") and settings.max_batch == 8 and settings.max_wait_ms == 2.5
    assert settings.api_key.get_secret_value() == "hush-hush-hush-hush" and "hush-hush-hush-hush" not in repr(settings)
    assert settings.cors_origin_list == ["http://a.example", "http://b.example"]
    assert settings.gallery_root is None and settings.port == 9001 and settings.host == "0.0.0.0"


def test_invalid_settings_are_refused(monkeypatch):
    monkeypatch.setenv("SBIR_MAX_BATCH", "0")
    with pytest.raises(ValueError, match="max_batch"):
        Settings()


def test_cli_flags_map_to_settings():
    args = build_parser().parse_args(["--port", "8123", "--index-dir", "/x", "--max-k", "7", "--backbone", "sbir-tiny"])
    assert (args.port, args.index_dir, args.max_k, args.backbone) == (8123, "/x", 7, "sbir-tiny")
    assert build_parser().parse_args([]).metrics_require_key is None  # unset: the environment decides
    access = build_parser().parse_args(["--photo-url-ttl-s", "600", "--metrics-require-key"])
    assert (access.photo_url_ttl_s, access.metrics_require_key) == (600, True)


@pytest.mark.parametrize("data, expected", [
    (b"\x89PNG\r\n\x1a\n....", "image/png"), (b"\xff\xd8\xff\xe0", "image/jpeg"), (b"GIF89a..", "image/gif"),
    (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"), (b"BM....", "image/bmp"), (b"II*\x00", "image/tiff"),
    (b"%PDF", None), (b"", None), (b"<svg", None), (b"II+\x00\x08\x00\x00\x00", "image/tiff"),  # BigTIFF
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "image/avif"),
    # an AVIF naming the generic HEIF brand as its major one, and AVIF among the compatible brands
    (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf", "image/avif"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "image/heic"),  # an iPhone photo
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1miaf", "image/heif"),
    (b"\x00\x00\x00\x18ftyphevc\x00\x00\x00\x00msf1hevc", None),  # an image sequence: a video
])
def test_image_types_are_sniffed_from_content(data, expected):
    assert sniff_image_type(data) == expected


def test_k_parsing():
    assert parse_k(None, 100) == 10 and parse_k("7", 100) == 7 and parse_k(3.0, 100) == 3
    for bad in (0, 101, "x", 2.5, True):
        with pytest.raises(APIError):
            parse_k(bad, 100)


def test_photo_paths_must_resolve_inside_the_gallery_root(tmp_path):
    gallery, outside = tmp_path / "gallery", tmp_path / "outside"
    gallery.mkdir(), outside.mkdir()
    (gallery / "in.jpg").write_bytes(b"x")
    (outside / "secret.jpg").write_bytes(b"x")
    (gallery / "link.jpg").symlink_to(outside / "secret.jpg")
    (gallery / "loop.jpg").symlink_to(gallery / "loop.jpg")

    def record(path):
        return PhotoRecord(id=1, path=str(path), category=None, sha256="0" * 64, size=1, added_at="", metadata={})

    assert safe_photo_path(record(gallery / "in.jpg"), gallery) == (gallery / "in.jpg").resolve()
    for bad in (gallery / "link.jpg", gallery / ".." / "outside" / "secret.jpg", outside / "secret.jpg",
                gallery / "loop.jpg", gallery / "missing.jpg", gallery):
        with pytest.raises(APIError) as refused:
            safe_photo_path(record(bad), gallery)
        assert refused.value.status == 404 and str(tmp_path) not in refused.value.message
    with pytest.raises(APIError):
        safe_photo_path(record(gallery / "in.jpg"), None)


def test_milvus_refuses_results_deeper_than_it_searches_and_never_shows_its_token(tmp_path):
    from pydantic import ValidationError

    milvus = {"engine": "milvus", "milvus_uri": "http://127.0.0.1:19530", "collection": "photos",
              "milvus_token": "alice:s3cret"}
    with pytest.raises(ValidationError, match="at most 16384"):
        Settings(index_dir=tmp_path, max_results=16_385, **milvus)
    settings = Settings(index_dir=tmp_path, max_results=16_384, **milvus)
    assert "s3cret" not in repr(settings.location) and settings.location.token == "alice:s3cret"
    Settings(index_dir=tmp_path, max_results=100_000)  # FAISS ranks as deep as asked


def test_a_setting_present_but_empty_is_its_default_and_a_blank_key_is_still_refused(monkeypatch, tmp_path):
    """Compose passes `KEY=` from an .env as set but empty: the API refused to start on SBIR_PRECISION= where the
    indexer and training took the default."""
    from app.settings import Settings

    for name in ("SBIR_PRECISION", "SBIR_ENCODER_LANES", "SBIR_DECODE_THREADS", "SBIR_QUERY_SAMPLE",
                 "SBIR_MAX_IMAGE_PIXELS", "SBIR_MAX_STROKE_POINTS", "SBIR_MILVUS_CONSISTENCY", "SBIR_DEVICE",
                 "SBIR_MAX_K", "SBIR_HIDE_PATHS", "SBIR_INDEX_DIR"):
        monkeypatch.setenv(name, " ")
    settings = Settings()
    default = Settings.model_fields
    for field in ("precision", "encoder_lanes", "decode_threads", "query_sample", "max_image_pixels",
                  "max_stroke_points", "milvus_consistency", "device", "max_k", "hide_paths", "index_dir"):
        assert getattr(settings, field) == default[field].default, field
    monkeypatch.setenv("SBIR_PRECISION", "fp32")  # a flag given empty leaves the environment's value
    from app.__main__ import settings_overrides

    assert Settings(**settings_overrides(build_parser().parse_args(["--precision", " "]))).precision == "fp32"
    monkeypatch.setenv("SBIR_API_KEY", " ")
    with pytest.raises(ValueError, match="SBIR_API_KEY"):
        Settings(index_dir=tmp_path)
