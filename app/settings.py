"""Service settings: environment variables (``SBIR_*``, plus ``HOST``/``PORT``) and CLI flags.

One pydantic-settings model, so every knob has a type, a default and a line of documentation, and
``python -m app --help`` and ``docs/app.md`` describe the same thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from encoder.imaging import DEFAULT_MAX_PIXELS
from encoder.strokes import DEFAULT_MAX_POINTS
from photo_index import BuildError, Location, locate
from photo_index.location import DEFAULT_MILVUS_TIMEOUT_S

from .access import MIN_KEY_LENGTH
from .query_fields import DEFAULT_TEXT_WEIGHT, MAX_TEXT_CHARS

MIB = 1024 * 1024


def _check_header_safe(which: str, key: str) -> None:
    """A key travels in the X-API-Key header, which HTTP reads as Latin-1 bytes: a key outside printable ASCII (an
    accent, a Cyrillic letter, a control character) would be accepted here and then never match."""
    if not (key.isascii() and key.isprintable()):
        raise ValueError(f"{which} holds characters outside printable ASCII, which an HTTP header cannot carry "
                         "as written; use letters, digits and punctuation (e.g. secrets.token_urlsafe(32))")


# Settings whose value set but empty means their default (an .env's `KEY=`). Not the keys (a blank one is refused),
# not host and port (pydantic takes the first alias present, so an empty PORT would hide SBIR_PORT).
EMPTY_IS_DEFAULT = (
    "backbone", "pretrained", "activation", "index_dir", "engine", "milvus_timeout_s", "milvus_consistency", "device",
    "precision", "encoder_lanes", "max_batch", "max_wait_ms", "decode_threads", "max_k", "max_results", "hide_paths",
    "max_upload_bytes", "max_image_pixels", "max_stroke_points", "text_weight", "max_text_chars", "photo_url_ttl_s",
    "metrics_require_key", "reload_interval_s", "thumbnail_cache_mb", "body_timeout_s", "max_bodies_in_flight",
    "max_bodies_per_client", "drain_max_bytes", "drain_timeout_s", "header_timeout_s", "http_parser",
    "limit_concurrency", "timeout_keep_alive_s", "query_sample",
)


class Settings(BaseSettings):
    """Everything the service can be told; unknown environment variables are ignored."""

    # hide_input_in_errors: a refused key must not be printed in the start-up error
    model_config = SettingsConfigDict(env_prefix="SBIR_", extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True)

    backbone: str | None = Field(None, description="open_clip architecture (default: encoder's, ViT-B-32)")
    pretrained: str | None = Field(None, description="backbone weights source (default: encoder's, openai)")
    activation: Literal["auto", "gelu", "quick_gelu"] = Field(
        "auto", description="MLP activation (auto: what the weights were trained with; a checkpoint's must agree)")
    checkpoint: Path | None = Field(None, description="trained prompts (.safetensors); none: frozen CLIP")
    index_dir: Path = Field(Path("index"), description="index directory written by index_builder")
    engine: Literal["faiss", "milvus"] = Field("faiss", description="vector engine: faiss (index_dir) | milvus")
    milvus_uri: str | None = Field(None, description="Milvus server for engine milvus, e.g. http://127.0.0.1:19530")
    collection: str | None = Field(None, description="Milvus alias the index is served under (engine milvus)")
    milvus_token: SecretStr | None = Field(None, description="Milvus token, user:password or an API key (engine "
                                           "milvus)")
    milvus_timeout_s: float = Field(DEFAULT_MILVUS_TIMEOUT_S, gt=0, le=600,
                                    description="longest wait for one Milvus call")
    milvus_consistency: Literal["Strong", "Bounded"] = Field(
        "Strong", description="Milvus search consistency: Strong (sees every write; waits ~200 ms for the server's "
        "time tick) or Bounded (at once; may miss the last few seconds of writes)")
    gallery_root: Path | None = Field(None, description="photos are served only from inside this folder "
                                      "(default: the folder the index was built from)")
    device: str = Field("auto", description="auto | cpu | cuda")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="inference precision: auto = bf16 weights and inputs on a CPU with native bf16 (AMX, or "
        "avx512_bf16 confirmed by a timing probe), the autocast on CUDA, fp32 elsewhere")
    encoder_lanes: str = Field(
        "auto", pattern=r"^\s*(auto|[1-9][0-9]{0,2})\s*$", description="encoder replicas a CPU batch is split over, "
        "each with a share of torch's threads (auto: 2 on a CPU, 1 on a GPU; 1: one team of all threads)")
    max_batch: int = Field(32, ge=1, le=4096, description="most sketches encoded in one call")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="longest a sketch waits for a batch to fill")
    decode_threads: int = Field(0, ge=0, le=256, description="threads that decode uploads beside the encoder (0: "
                                "one per 8 cores, at least 1); more compete with the encoder's threads for the cores")
    max_k: int = Field(100, ge=1, le=10_000, description="largest k a search may ask for")
    max_results: int = Field(1000, ge=1, le=100_000, description="deepest a search pages: offset + k at most this")
    hide_paths: bool = Field(False, description="results leave out the photo's path in the gallery")
    max_upload_bytes: int = Field(10 * MIB, ge=1024, description="largest request body accepted")
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="largest uploaded image (width*height)")
    max_stroke_points: int = Field(DEFAULT_MAX_POINTS, ge=1, description="most points in a strokes drawing")
    text_weight: float = Field(DEFAULT_TEXT_WEIGHT, ge=0, le=1, description="default weight of the text in a "
                               "sketch + text (or like + text) query; a request may set text_weight")
    max_text_chars: int = Field(MAX_TEXT_CHARS, ge=1, le=10_000, description="longest query text, in characters")
    api_key: SecretStr | None = Field(None, description="when set, search, /info details and photos need "
                                      "header X-API-Key (or a signed photo URL)")
    api_keys: SecretStr | None = Field(None, description="more keys, comma-separated (rotation); any one works")
    admin_keys: SecretStr | None = Field(None, description="keys of the /admin routes, comma-separated (a set of "
                                         "its own: never accepted for search, nor search keys here); unset: off")
    url_secret: SecretStr | None = Field(None, description="HMAC secret of signed photo URLs "
                                         "(default: derived from the keys)")
    photo_url_ttl_s: int = Field(3600, ge=1, le=7 * 86400, description="lifetime of a signed photo URL, seconds")
    metrics_require_key: bool = Field(False, description="GET /metrics also needs X-API-Key")
    cors_origins: str = Field("", description="comma-separated origins allowed by CORS (empty: none)")
    reload_interval_s: float = Field(2.0, gt=0, description="how often the index's `current` pointer is polled")
    thumbnail_cache_mb: int = Field(64, ge=0, description="memory for cached thumbnails")
    # Slow and oversized requests (app/body_guard.py; the last two are uvicorn's own settings).
    body_timeout_s: float = Field(30.0, gt=0, description="a request body must arrive within this time (else 408)")
    max_bodies_in_flight: int = Field(64, ge=1, description="most request bodies read at once (beyond: 503)")
    max_bodies_per_client: int = Field(8, ge=1, description="most request bodies one client reads at once, once "
                                       "half the body slots are in use "
                                       "(a client: its API key when keys are set, else its address; beyond: 503)")
    drain_max_bytes: int = Field(64 * MIB, ge=0, description="most bytes of a refused body read and discarded "
                                 "before answering, so the client reads the answer")
    drain_timeout_s: float = Field(2.0, ge=0, description="longest such a refused body is read and discarded")
    header_timeout_s: float = Field(10.0, gt=0, description="a connection must send a complete request head "
                                    "within this time, else it is closed")
    http_parser: Literal["auto", "h11", "httptools"] = Field(
        "auto", description="HTTP/1.1 parser: httptools (C, uvicorn[standard]) or h11 (pure Python); auto: httptools "
        "where installed")
    limit_concurrency: int | None = Field(1000, ge=1, description="most connections and tasks uvicorn serves at "
                                          "once (beyond: 503)")
    timeout_keep_alive_s: float = Field(5.0, gt=0, description="idle keep-alive connections close after this")
    query_sample: int = Field(0, ge=0, le=1_000_000, description="keep a uniform sample (reservoir) of this many "
                              "query vectors for `index_builder tune` (0: off)")
    query_sample_path: Path | None = Field(None, description="where the query sample is saved (.npy), on shutdown "
                                           "and by POST /admin/query-sample (default: INDEX_DIR/query_sample.npy)")
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("host", "HOST", "SBIR_HOST"))
    port: int = Field(8000, ge=0, le=65535, validation_alias=AliasChoices("port", "PORT", "SBIR_PORT"))

    @field_validator(*EMPTY_IS_DEFAULT, mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        # `SBIR_PRECISION=` in an .env (compose passes it as set but empty) means the default, as the indexer and
        # training read it; keys are not here: a blank key stays refused (below)
        if isinstance(value, str) and not value.strip():
            raise PydanticUseDefault()
        return value

    @field_validator("checkpoint", "gallery_root", "query_sample_path", "admin_keys", "milvus_uri", "collection",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _keys_are_usable(self) -> Settings:
        # A key setting is either absent (an open service) or holds usable keys: one that is present but
        # blank (" ", ",,,", an empty $(cat missing-file)) must never start the service open.
        for name, setting, keys in (("SBIR_API_KEY", self.api_key, [self.api_key]),
                                    ("SBIR_API_KEYS", self.api_keys, self._split(self.api_keys)),
                                    ("SBIR_URL_SECRET", self.url_secret, [self.url_secret])):
            if setting is None:
                continue
            if not any(key.get_secret_value().strip() for key in keys):
                raise ValueError(f"{name} is set but holds no key (it is empty, or only spaces or commas); set "
                                 f"keys of at least {MIN_KEY_LENGTH} characters, or remove the variable to run "
                                 "without keys")
            for position, key in enumerate(keys, 1):
                which = f"key {position} of {name}" if name == "SBIR_API_KEYS" else name
                if len(key.get_secret_value().strip()) < MIN_KEY_LENGTH:
                    raise ValueError(
                        f"{which} is shorter than {MIN_KEY_LENGTH} characters; use a long random one, e.g. "
                        "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
                if name != "SBIR_URL_SECRET":  # the secret never travels in a header (HMAC of its UTF-8 bytes)
                    _check_header_safe(which, key.get_secret_value().strip())
        return self

    @staticmethod
    def _split(keys: SecretStr | None) -> list[SecretStr]:
        text = keys.get_secret_value() if keys else ""
        return [SecretStr(part) for part in text.split(",") if part.strip()]

    @property
    def api_key_list(self) -> list[str]:
        """Every configured key (SBIR_API_KEY and SBIR_API_KEYS), surrounding spaces removed."""
        keys = [self.api_key, *self._split(self.api_keys)]
        return [key.get_secret_value().strip() for key in keys if key is not None]

    @model_validator(mode="after")
    def _admin_keys_are_long_and_separate(self) -> Settings:
        search = set(self.api_key_list)
        for position, key in enumerate(self.admin_key_list, 1):
            if len(key) < MIN_KEY_LENGTH:
                raise ValueError(f"key {position} of SBIR_ADMIN_KEYS is shorter than {MIN_KEY_LENGTH} characters")
            _check_header_safe(f"key {position} of SBIR_ADMIN_KEYS", key)
            if key in search:
                raise ValueError(f"key {position} of SBIR_ADMIN_KEYS is also a search key (SBIR_API_KEY/S); "
                                 "admin keys must be a separate set")
        if self.metrics_require_key and not search and not self.admin_key_list:
            raise ValueError("SBIR_METRICS_REQUIRE_KEY is set but no key is configured (SBIR_API_KEY/S or "
                             "SBIR_ADMIN_KEYS): /metrics would stay open; configure a key or unset the switch")
        return self

    @property
    def admin_key_list(self) -> list[str]:
        """The keys of the /admin routes (SBIR_ADMIN_KEYS), surrounding spaces removed."""
        return [key.get_secret_value().strip() for key in self._split(self.admin_keys)]

    @model_validator(mode="after")
    def _engine_needs_its_location(self) -> Settings:
        try:
            location = self.location
        except BuildError as error:
            raise ValueError(str(error)) from None
        if location.max_depth is not None and self.max_results > location.max_depth:
            raise ValueError(f"SBIR_MAX_RESULTS is {self.max_results}, deeper than the {location.engine} engine "
                             f"searches (at most {location.max_depth}).")
        return self

    @property
    def location(self) -> Location:
        """Where the served index is (a folder, or a Milvus alias), as one validated object."""
        return locate(self.engine, index_dir=self.index_dir, milvus_uri=self.milvus_uri, collection=self.collection,
                      token=self.milvus_token.get_secret_value() if self.milvus_token else "",
                      timeout_s=self.milvus_timeout_s, consistency=self.milvus_consistency)

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def query_sample_file(self) -> Path:
        return self.query_sample_path or self.index_dir / "query_sample.npy"


def describe_settings_error(error: ValidationError) -> str:
    """One line naming each refused setting by its environment variable, without pydantic's layout or links."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        field = str(item["loc"][0]) if item.get("loc") else ""
        if field in Settings.model_fields:
            variable = field.upper() if field in ("host", "port") else f"SBIR_{field.upper()}"
            message = f"{variable}: {message}"
        parts.append(message)
    return "; ".join(parts).replace("\n", " ")
