"""bench/gpu_suite.sh --smoke: every step of the GPU check runs (tiny, on CPU) and its JSON has every figure.

The suite is only run for real on a GPU host; this keeps the script and the benchmarks it drives from rotting.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_the_gpu_suite_smoke_runs_every_step_and_reports_every_figure(tmp_path):
    out = tmp_path / "suite.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_suite.sh"), "--smoke", "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=560)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["smoke"] is True and figures["failed"] == []
    assert figures["host"]["cpus"] >= 1 and figures["host"]["torch"]

    encoder = figures["encoder"]
    assert [row["batch"] for row in encoder["rows"]] == [1, 4]
    assert all(_positive(row[key]) for row in encoder["rows"]
               for key in ("bare_img_s", "sketch_img_s", "photo_img_s", "sketch_ratio", "photo_ratio"))

    (search,) = figures["search"]["rows"]
    assert search["factory"].startswith("IVF") and _positive(search["nprobe"]) and _positive(search["latency_flat_ms"])
    assert set(search["devices"]) == {"cpu", "auto"}
    assert all(_positive(row["latency_ms"]) and _positive(row["batch_queries_per_s"]) and row["recall"] >= 0.8
               for row in search["devices"].values())

    build = figures["index_build"]
    assert build["embedded"] == build["photos"] == 48
    assert all(_positive(build[key]) for key in ("build_photos_per_s", "bare_encoder_per_s", "efficiency"))

    training = figures["training"]
    assert training["steps"] == 3 and _positive(training["steps_per_s"]) and _positive(training["images_per_s"])

    serve = figures["serve"]
    assert all(_positive(serve[key]) for key in ("c1_p50_ms", "in_process_p50_ms", "p50_ratio", "p99_ratio",
                                                  "c16_per_s", "throughput_ratio"))
    assert serve["c16_failed"] == serve["swap_failed"] == 0 and serve["swap_new_version_served"] is True
    assert set(figures["step_seconds"]) == {"encoder", "search", "index_build", "training", "serve"}
    assert not list(tmp_path.glob("gpu-suite-*"))  # its work folder is removed
