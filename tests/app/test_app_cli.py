"""`python -m app`: flags for every setting, and a clear message with exit code 2 when it cannot start."""

from __future__ import annotations

from app.__main__ import build_parser, main


def test_help_lists_the_settings_flags():
    text = build_parser().format_help()
    for flag in ("--index-dir", "--max-batch", "--max-wait-ms", "--cors-origins", "--checkpoint", "SBIR_MAX_K"):
        assert flag in text


def test_unavailable_weights_stop_with_the_encoders_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code = main(["--port", "0", "--backbone", "sbir-tiny", "--pretrained", str(tmp_path / "missing.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot load the encoder" in err and "Traceback" not in err


def test_invalid_settings_stop_with_a_message(capsys):
    assert main(["--max-batch", "0"]) == 2
    assert "max_batch" in capsys.readouterr().err
