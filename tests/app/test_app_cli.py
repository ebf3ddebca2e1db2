"""`python -m app`: flags for every setting, and a clear message with exit code 2 when it cannot start."""

from __future__ import annotations

from types import SimpleNamespace

from app.__main__ import build_parser, main
from app.metrics import Metrics


def test_help_lists_the_settings_flags():
    text = build_parser().format_help()
    for flag in ("--index-dir", "--max-batch", "--max-wait-ms", "--cors-origins", "--checkpoint", "SBIR_MAX_K"):
        assert flag in text


def test_every_setting_but_the_secrets_is_a_flag():
    """docs/app.md: each variable is also a flag (--max-results, --hide-paths and the query sample's were not)."""
    from app.__main__ import SECRETS
    from app.settings import Settings

    flags = {action.dest for action in build_parser()._actions}
    assert [name for name in Settings.model_fields if name not in flags and name not in SECRETS] == []
    assert not flags & set(SECRETS)


def test_unavailable_weights_stop_with_the_encoders_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code = main(["--port", "0", "--backbone", "sbir-tiny", "--pretrained", str(tmp_path / "missing.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot load the encoder" in err and "Traceback" not in err


def test_an_encoder_that_answers_nan_stops_with_a_message_before_the_server_starts(tmp_path, capsys, monkeypatch):
    """A well-formed checkpoint whose prompts are huge (every embedding NaN) ended uvicorn's startup with a
    traceback ("Application startup failed", exit 3)."""
    import torch

    import app.__main__ as entry
    from encoder import EncoderConfig, PromptConfig, build_encoder, save_checkpoint

    encoder = build_encoder(EncoderConfig("sbir-tiny", "none", PromptConfig()))
    with torch.no_grad():
        for prompt in encoder.prompts.values():
            prompt.fill_(1e30)
    path = save_checkpoint(encoder, tmp_path / "huge.safetensors")
    monkeypatch.setattr(entry.uvicorn, "run", lambda *args, **kwargs: (_ for _ in ()).throw(AssertionError))
    code = main(["--port", "0", "--backbone", "sbir-tiny", "--pretrained", "none", "--checkpoint", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "NaN or infinite" in err and "Traceback" not in err


def test_invalid_settings_stop_with_a_message(capsys):
    assert main(["--max-batch", "0"]) == 2
    err = capsys.readouterr().err
    assert "SBIR_MAX_BATCH" in err and len(err.strip().splitlines()) == 1


def test_slow_client_settings_reach_the_app_and_uvicorn(monkeypatch):
    import app.__main__ as entry

    monkeypatch.setenv("SBIR_BODY_TIMEOUT_S", "7.5")
    monkeypatch.setenv("SBIR_LIMIT_CONCURRENCY", "321")
    served = {}
    monkeypatch.setattr(entry, "load_configured_encoder", lambda settings: None)
    monkeypatch.setattr(entry, "check_encoder", lambda encoder: None)
    metrics = Metrics()
    def fake_app(settings, encoder):
        return SimpleNamespace(state=SimpleNamespace(settings=settings, metrics=metrics))

    monkeypatch.setattr(entry, "create_app", fake_app)
    monkeypatch.setattr(entry.uvicorn, "run", lambda app, **options: served.update(options, app=app))
    assert main(["--max-bodies-in-flight", "3", "--timeout-keep-alive-s", "2"]) == 0
    settings = served["app"].state.settings
    assert (settings.body_timeout_s, settings.max_bodies_in_flight) == (7.5, 3)
    assert (served["limit_concurrency"], served["timeout_keep_alive"]) == (321, 2.0)
    assert served["http"].metrics is metrics  # the protocol counts the heads it refuses with the app's errors
