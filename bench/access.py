"""Timing of the access checks (app/access.py): does a wrong signature or key that shares a long prefix with the
right one take longer to refuse than one that shares nothing?

Prints the median time of one check per case and its ratio to the "nothing matches" floor (1.00 = no
difference). Cases are interleaved in rounds so machine noise hits them alike. Also prints what signing the
URLs of one search result costs.

    python bench/access.py [--rounds 200] [--per-round 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.access import Access  # noqa: E402


def _altered(right: str, keep: int) -> str:
    """`right` with every character from position `keep` on changed (so exactly `keep` leading ones match)."""
    return right[:keep] + "".join("B" if c == "A" else "A" for c in right[keep:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--per-round", type=int, default=200, help="checks timed together per case and round")
    args = parser.parse_args()

    key = "bench-key-" + "k" * 30
    access = Access([key, "second-key-" + "s" * 30])
    params = dict(parse_qsl(urlsplit(access.photo_url(42, 256, "0123456789abcdef")).query))
    sig, exp = params["sig"], params["exp"]
    tag = "0123456789abcdef"
    wrong_sig_none, wrong_sig_most = _altered(sig, 0), _altered(sig, len(sig) - 1)
    wrong_key_none, wrong_key_most = _altered(key, 0), _altered(key, len(key) - 1)
    cases = {
        "signature, 0 chars match": lambda: access.signed_seconds_left(42, 256, tag, exp, wrong_sig_none),
        f"signature, {len(sig) - 1} of {len(sig)} match": lambda: access.signed_seconds_left(
            42, 256, tag, exp, wrong_sig_most),
        "key, 0 chars match": lambda: access.key_ok(wrong_key_none),
        f"key, {len(key) - 1} of {len(key)} match": lambda: access.key_ok(wrong_key_most),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, check in cases.items():
            started = time.perf_counter_ns()
            for _ in range(args.per_round):
                check()
            samples[name].append((time.perf_counter_ns() - started) / args.per_round)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    floors = {"signature": medians["signature, 0 chars match"], "key": medians["key, 0 chars match"]}
    print(f"{'case':<32} {'median µs':>10} {'ratio':>7}")
    for name, median in medians.items():
        print(f"{name:<32} {median / 1000:>10.2f} {median / floors[name.split(',')[0]]:>7.3f}")

    started = time.perf_counter_ns()
    for i in range(10_000):
        access.photo_url(i, None, "0123456789abcdef")
        access.photo_url(i, 256, "0123456789abcdef")
    print(f"signing one result's two URLs: {(time.perf_counter_ns() - started) / 10_000 / 1000:.2f} µs")


if __name__ == "__main__":
    main()
