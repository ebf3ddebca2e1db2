"""`python -m app`: serve the API and the page with uvicorn (flags override SBIR_* environment variables)."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn
from pydantic import ValidationError

from encoder import add_encoder_args
from encoder.errors import SBIRError

from .main import check_encoder, create_app, load_configured_encoder
from .server import server_options
from .settings import EMPTY_IS_DEFAULT, Settings, describe_settings_error

# flag → settings field, for the options that are plain values
FLAGS = {
    "--host": ("host", str), "--port": ("port", int), "--index-dir": ("index_dir", str),
    "--gallery-root": ("gallery_root", str), "--device": ("device", str),
    "--precision": ("precision", str), "--encoder-lanes": ("encoder_lanes", str), "--max-batch": ("max_batch", int),
    "--max-wait-ms": ("max_wait_ms", float), "--decode-threads": ("decode_threads", int), "--max-k": ("max_k", int),
    "--max-upload-bytes": ("max_upload_bytes", int), "--max-image-pixels": ("max_image_pixels", int),
    "--max-stroke-points": ("max_stroke_points", int), "--cors-origins": ("cors_origins", str),
    "--reload-interval-s": ("reload_interval_s", float), "--thumbnail-cache-mb": ("thumbnail_cache_mb", int),
    "--text-weight": ("text_weight", float), "--max-text-chars": ("max_text_chars", int),
    "--photo-url-ttl-s": ("photo_url_ttl_s", int), "--max-results": ("max_results", int),
    "--query-sample": ("query_sample", int), "--query-sample-path": ("query_sample_path", str),
    "--body-timeout-s": ("body_timeout_s", float), "--max-bodies-in-flight": ("max_bodies_in_flight", int),
    "--max-bodies-per-client": ("max_bodies_per_client", int), "--header-timeout-s": ("header_timeout_s", float),
    "--http-parser": ("http_parser", str),
    "--drain-max-bytes": ("drain_max_bytes", int), "--drain-timeout-s": ("drain_timeout_s", float),
    "--limit-concurrency": ("limit_concurrency", int), "--timeout-keep-alive-s": ("timeout_keep_alive_s", float),
    "--engine": ("engine", str), "--milvus-uri": ("milvus_uri", str), "--collection": ("collection", str),
    "--milvus-timeout-s": ("milvus_timeout_s", float), "--milvus-consistency": ("milvus_consistency", str),
}  # API keys, the URL secret and the Milvus token have no flags: a command line is visible to every user of the host
SECRETS = ("api_key", "api_keys", "admin_keys", "url_secret", "milvus_token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    fields = Settings.model_fields
    for flag, (name, kind) in FLAGS.items():
        env = name.upper() if name in ("host", "port") else f"SBIR_{name.upper()}"
        parser.add_argument(flag, dest=name, type=kind, default=None,
                            help=f"{fields[name].description or name} (env {env})")
    for name in ("metrics_require_key", "hide_paths"):  # switches: on when given, else the environment's
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_true", default=None,
                            help=f"{fields[name].description} (env SBIR_{name.upper()})")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_encoder_args(parser)
    return parser


def settings_overrides(args: argparse.Namespace) -> dict:
    """The settings the command line gives; a flag given empty (`--precision "$UNSET"`) leaves the setting to the
    environment, as if not given."""
    return {name: value for name, value in vars(args).items()
            if name in Settings.model_fields and value is not None
            and not (name in EMPTY_IS_DEFAULT and isinstance(value, str) and not value.strip())}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = settings_overrides(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings(**overrides)
    except ValidationError as error:  # one line naming the variable; never a traceback, never the value
        print(f"error: invalid settings: {describe_settings_error(error)}", file=sys.stderr)
        return 2
    try:
        encoder = load_configured_encoder(settings)
        check_encoder(encoder)
    except (SBIRError, ValueError) as error:
        print(f"error: cannot load the encoder: {error}", file=sys.stderr)
        return 2
    app = create_app(settings, encoder=encoder)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level,
                **server_options(settings, app.state.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
