"""The cost of recording photo details at indexing time: the header read (size, EXIF capture time) per photo,
as a ratio of the reader step it joins (read + hash + decode + preprocess, `index_builder.embedding.read_photo`).

The builder reads headers in the main process, once per new or changed photo (and once per photo of an index
written before details existed); the reader step runs in the DataLoader workers. Rounds are interleaved in one
process, so a busy box slows both alike.

    python bench/photo_header.py [--photos 40] [--size 1600x1200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder import load_encoder  # noqa: E402
from index_builder.embedding import read_photo  # noqa: E402
from index_builder.photo_header import read_header  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--size", default="1600x1200", help="JPEG size, WxH")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backbone", default="sbir-tiny")
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.split("x"))
    encoder = load_encoder(backbone=args.backbone, pretrained="none", device="cpu")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(args.photos):  # smooth, photo-like JPEGs with an EXIF capture time
            coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
            exif = Image.Exif()
            exif.get_ifd(0x8769)[36867] = "2021:05:06 07:08:09"
            path = Path(folder) / f"{i}.jpg"
            coarse.resize((width, height), Image.Resampling.BICUBIC).save(path, quality=90, exif=exif)
            paths.append(str(path))
        for round_ in range(args.rounds):
            started = time.perf_counter()
            for index, path in enumerate(paths):
                read_photo(index, path, encoder.preprocess)
            step = time.perf_counter() - started
            started = time.perf_counter()
            for path in paths:
                read_header(path)
            header = time.perf_counter() - started
            print(f"round {round_}: reader step {step / len(paths) * 1e3:.2f} ms/photo, header "
                  f"{header / len(paths) * 1e3:.3f} ms/photo, header / reader step {header / step:.3f}")


if __name__ == "__main__":
    main()
