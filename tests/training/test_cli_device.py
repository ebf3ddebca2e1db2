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
