"""Service settings: environment variables (``SBIR_*``, plus ``HOST``/``PORT``) and CLI flags.

One pydantic-settings model, so every knob has a type, a default and a line of documentation, and
``python -m app --help`` and ``docs/app.md`` describe the same thing.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from encoder.imaging import DEFAULT_MAX_PIXELS
from encoder.strokes import DEFAULT_MAX_POINTS

from .query_fields import DEFAULT_TEXT_WEIGHT, MAX_TEXT_CHARS

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Everything the service can be told; unknown environment variables are ignored."""

    model_config = SettingsConfigDict(env_prefix="SBIR_", extra="ignore", populate_by_name=True)

    backbone: str | None = Field(None, description="open_clip architecture (default: encoder's, ViT-B-32)")
    pretrained: str | None = Field(None, description="backbone weights source (default: encoder's, openai)")
    checkpoint: Path | None = Field(None, description="trained prompts (.safetensors); none: frozen CLIP")
    index_dir: Path = Field(Path("index"), description="index directory written by index_builder")
    gallery_root: Path | None = Field(None, description="photos are served only from inside this folder "
                                      "(default: the folder the index was built from)")
    device: str = Field("auto", description="auto | cpu | cuda")
    max_batch: int = Field(32, ge=1, le=4096, description="most sketches encoded in one call")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="longest a sketch waits for a batch to fill")
    max_k: int = Field(100, ge=1, le=10_000, description="largest k a search may ask for")
    max_upload_bytes: int = Field(10 * MIB, ge=1024, description="largest request body accepted")
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="largest uploaded image (width*height)")
    max_stroke_points: int = Field(DEFAULT_MAX_POINTS, ge=1, description="most points in a strokes drawing")
    text_weight: float = Field(DEFAULT_TEXT_WEIGHT, ge=0, le=1, description="default weight of the text in a "
                               "sketch + text (or like + text) query; a request may set text_weight")
    max_text_chars: int = Field(MAX_TEXT_CHARS, ge=1, le=10_000, description="longest query text, in characters")
    api_key: SecretStr | None = Field(None, description="when set, POST /search needs header X-API-Key")
    cors_origins: str = Field("", description="comma-separated origins allowed by CORS (empty: none)")
    reload_interval_s: float = Field(2.0, gt=0, description="how often the index's `current` pointer is polled")
    thumbnail_cache_mb: int = Field(64, ge=0, description="memory for cached thumbnails")
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("host", "HOST", "SBIR_HOST"))
    port: int = Field(8000, ge=0, le=65535, validation_alias=AliasChoices("port", "PORT", "SBIR_PORT"))

    @field_validator("checkpoint", "gallery_root", "api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]
