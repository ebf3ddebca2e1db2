"""The training CLI takes its device from SBIR_DEVICE, as the API and the indexer do (docs/deploy.md)."""

from __future__ import annotations

import pytest

from encoder import SBIRError
from training import cli

COMMANDS = {
    "category": ["category", "--data", "D", "--out", "O"],
    "fine-grained": ["fine-grained", "--data", "D", "--out", "O"],
    "evaluate": ["evaluate", "--data", "D"],
}


@pytest.mark.parametrize("argv", COMMANDS.values(), ids=COMMANDS.keys())
def test_the_device_defaults_to_sbir_device_and_the_flag_overrides_it(monkeypatch, argv):
    # was: --device defaulted to auto whatever SBIR_DEVICE said, so `train` alone ignored the shared setting
    def parse(args):  # the default is read when the parser is built, as the encoder flags' are
        return cli.build_parser().parse_args(args)

    monkeypatch.setenv("SBIR_DEVICE", "cpu")
    assert parse(argv).device == "cpu"
    assert parse([*argv, "--device", "auto"]).device == "auto"
    monkeypatch.setenv("SBIR_DEVICE", "")
    assert parse(argv).device == "auto"
    monkeypatch.delenv("SBIR_DEVICE")
    assert parse(argv).device == "auto"


def test_a_bad_sbir_device_is_a_usage_error_naming_it(monkeypatch, capsys):
    monkeypatch.setenv("SBIR_DEVICE", "tpu")
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(COMMANDS["category"])
    assert exited.value.code == 2 and "'tpu' is not a device" in capsys.readouterr().err


def test_training_runs_on_the_device_sbir_device_names(monkeypatch):
    taken = []

    def init_distributed(device):
        taken.append(device)
        raise SBIRError("stop here")

    monkeypatch.setattr(cli, "init_distributed", init_distributed)
    monkeypatch.setenv("SBIR_DEVICE", "cpu")
    assert cli.main(COMMANDS["category"]) == 2 and cli.main(COMMANDS["fine-grained"]) == 2
    assert taken == ["cpu", "cpu"]


def test_one_device_rule_for_the_three_entry_points(monkeypatch, capsys):
    """An empty SBIR_DEVICE stopped the API and the indexer; training took mps or meta, which nothing here runs on."""
    import torch

    from encoder.checkpoint import resolve_device
    from index_builder.cli import _parser

    monkeypatch.setenv("SBIR_DEVICE", "")
    assert resolve_device("") == resolve_device("auto")
    assert _parser().parse_args(["build", "--gallery", "g"]).device == "auto"
    for name in ("meta", "mps"):
        with pytest.raises(ValueError, match="not supported"):
            resolve_device(name)
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args([*COMMANDS["evaluate"], "--device", name])
    capsys.readouterr()
    assert resolve_device("cpu") == torch.device("cpu")


def test_under_torchrun_each_rank_takes_its_own_gpu_whatever_index_the_device_names(monkeypatch):
    """SBIR_DEVICE=cuda:0 (meant for the service) put every rank on GPU 0, which NCCL refuses."""
    import torch

    from training import loop

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(loop, "resolve_device", lambda device: torch.device(device))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(loop.dist, "is_initialized", lambda: True)  # no process group needed to choose
    assert loop.init_distributed("cuda:0")[1] == torch.device("cuda", 1)
    assert loop.init_distributed("cuda")[1] == torch.device("cuda", 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert loop.init_distributed("cuda:1")[1] == torch.device("cuda", 1)  # one process: as named
