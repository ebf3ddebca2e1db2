"""`training evaluate --precision`: fp32 by default (scores in full precision), bf16 on request, recorded in JSON."""

from __future__ import annotations

import json

from tests.training.synthetic_categories import make_dataset
from training.cli import main


def test_evaluate_records_its_precision_and_bf16_scores_stay_close(tmp_path, capsys):
    data = make_dataset(tmp_path / "d", classes=["h1", "v1", "h2"], per_class=4)
    metrics = {}
    for precision in ("default", "bf16"):
        out = tmp_path / precision
        args = ["evaluate", "--data", str(data), "--split", "none", "--workers", "0", "--no-progress",
                "--json", str(out / "metrics.json")]
        assert main(args + ([] if precision == "default" else ["--precision", precision])) == 0
        metrics[precision] = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert metrics["default"]["precision"] == "fp32" and metrics["default"]["encoder"]["precision"] == "fp32"
    assert metrics["bf16"]["precision"] == "bf16" and metrics["bf16"]["encoder"]["precision"] == "bf16"
    assert abs(metrics["bf16"]["map_all"] - metrics["default"]["map_all"]) <= 0.02
