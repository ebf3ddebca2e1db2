"""`training evaluate` decodes with as many data workers as the CPUs this process may use, not a fixed 4."""

from __future__ import annotations

import os

import pytest

from training.cli import build_parser


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
@pytest.mark.parametrize("cpus", [{0}, {0, 1, 2, 5, 6, 7}])
def test_evaluate_defaults_to_the_cpus_this_process_may_use(monkeypatch, cpus):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus)
    args = build_parser().parse_args(["evaluate", "--data", "somewhere"])
    assert args.workers == len(cpus)
    assert build_parser().parse_args(["evaluate", "--data", "somewhere", "--workers", "0"]).workers == 0
