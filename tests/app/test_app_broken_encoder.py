"""An encoder that answers with NaN (damaged backbone weights: a checkpoint's own tensors are checked when it is
loaded) stops the service at its warm-up, instead of a service that answers every search with 200 and no results
while /readyz says 200."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.search import SearchEngine
from app.settings import Settings
from encoder.errors import BrokenEncoderError


def test_a_service_whose_encoder_answers_nan_does_not_start(app_index, app_encoder, monkeypatch):
    monkeypatch.setattr(SearchEngine, "embed", lambda self, tensors, modality: np.full(
        (len(tensors), app_encoder.embed_dim), np.nan, dtype=np.float32))
    app = create_app(Settings(index_dir=app_index[1]), encoder=app_encoder)
    with pytest.raises(BrokenEncoderError, match="NaN"), TestClient(app):
        pass
