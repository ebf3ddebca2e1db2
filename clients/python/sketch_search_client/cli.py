"""``sketch-search query SKETCH -k 10 --url URL``: search from the command line; a table, or ``--json``;
``--download DIR`` saves the photos. Exit 0 on success, 1 when the service cannot answer (unreachable, not
ready), 2 when the request is refused or the input is unusable."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import asdict
from pathlib import Path

from .client import Client
from .errors import InputError, NotReadyError, ServiceError, ServiceUnreachableError
from .models import SearchPage, SearchResult

ENV_URL, ENV_KEY = "SKETCH_SEARCH_URL", "SKETCH_SEARCH_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
_SNIFF = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
          (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options of every command. The main parser holds the defaults; each command's parser takes the same
    options with no default (SUPPRESS), so one given after the command overrides, and one left out keeps, what
    was given before it (or the default)."""
    def default(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--url", default=default(os.environ.get(ENV_URL) or DEFAULT_URL),  # set but empty: the default
                        help=f"the service (env {ENV_URL}, default {DEFAULT_URL})")
    parser.add_argument("--api-key", default=default(os.environ.get(ENV_KEY)),
                        help=f"X-API-Key, when the service needs one (env {ENV_KEY})")
    parser.add_argument("--timeout", type=float, default=default(60.0),
                        help="seconds a request may take, answer included (checked between the parts of the answer;"
                             " default 60)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sketch-search", description=__doc__,
                                     epilog="--url, --api-key and --timeout go before or after the command.")
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True)
    query = commands.add_parser("query", parents=[common],
                                help="find the photos closest to a sketch, a photo or words")
    query.add_argument("sketch", nargs="?", type=Path, help="an image, an SVG drawing, or JSON strokes (.json/.ndjson)")
    query.add_argument("-k", type=int, default=10, help="how many photos")
    query.add_argument("--offset", type=int, default=0, help="results to skip (paging)")
    query.add_argument("--text", help="words, alone or with the sketch")
    query.add_argument("--text-weight", type=float, default=None, help="0..1, weight of the words")
    query.add_argument("--like", type=int, help="id of an indexed photo: more like it")
    query.add_argument("--category", help="only photos of this category")
    query.add_argument("--as-photo", action="store_true", help="the image is a photo, not a sketch")
    query.add_argument("--json", action="store_true", help="print the service's JSON answer")
    query.add_argument("--download", type=Path, metavar="DIR", help="save the result photos into DIR")
    commands.add_parser("info", parents=[common], help="the service's index, categories and limits (JSON)")
    return parser


def _size(result: SearchResult) -> str:
    return f"{result.width}x{result.height}" if result.width and result.height else "-"


def table(page: SearchPage) -> str:
    """The results as an aligned text table, with a line on paging."""
    rows = [("#", "id", "score", "category", "size", "path")]
    rows += [(str(page.offset + rank), str(r.id), f"{r.score:.4f}", r.category or "-", _size(r), r.path or "-")
             for rank, r in enumerate(page.results, 1)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    more = f"; more: --offset {page.next_offset}" if page.has_more else ""
    lines.append(f"{len(page.results)} result(s), query {page.query}, index {page.index_version}{more}")
    return "\n".join(lines)


def _file_name(result: SearchResult, data: bytes) -> str:
    """`<id>-<name in the gallery>`, or `<id>.<type>` when the service hides paths (or names nothing usable).

    The name is the path's last part after either separator, without characters Windows refuses and without
    leading dots: a path from the service never places a file outside the download folder, on any system."""
    name = re.split(r"[/\\]", result.path or "")[-1]
    name = re.sub(r'[\x00-\x1f<>:"|?*]', "_", name).lstrip(". ").rstrip(". ")
    if name:
        return f"{result.id}-{name}"
    return f"{result.id}{next((ext for magic, ext in _SNIFF if data.startswith(magic)), '.img')}"


def download(client: Client, page: SearchPage, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for result in page.results:
        data = client.photo(result.id)
        target = folder / _file_name(result, data)
        target.write_bytes(data)
        saved.append(target)
    return saved


def _query(client: Client, args: argparse.Namespace) -> int:
    if args.sketch is None and args.text is None and args.like is None:
        raise InputError("give a sketch file, --text or --like")
    query = {"sketch": args.sketch, "text": args.text, "like": args.like, "category": args.category, "k": args.k,
             "offset": args.offset, "text_weight": args.text_weight, "as_photo": args.as_photo or None}
    page = client.search(**{name: value for name, value in query.items() if value is not None})
    print(json.dumps(page.raw, indent=2) if args.json else table(page))
    if args.download is not None:
        saved = download(client, page, args.download)
        print(f"saved {len(saved)} photo(s) to {args.download}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with Client(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            if args.command == "info":
                print(json.dumps(asdict(client.info())["raw"], indent=2))
                return 0
            return _query(client, args)
    except (ServiceUnreachableError, NotReadyError) as error:
        print(f"sketch-search: {error}", file=sys.stderr)
        return 1
    except (ServiceError, InputError, OSError) as error:
        print(f"sketch-search: {error}", file=sys.stderr)
        return 2
