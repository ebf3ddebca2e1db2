"""A search whose client hung up is not encoded: the page aborts its older search each time the drawing changes."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx

from app.main import create_app
from app.settings import Settings
from tests.app.support import serve

BODY = json.dumps({"strokes": [[[0, 0], [10, 10], [20, 0]]], "k": 3}).encode()
REQUEST = (b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
           % len(BODY)) + BODY


def test_searches_whose_clients_hung_up_are_dropped_before_the_encoder(app_index, app_encoder):
    app = create_app(Settings(index_dir=app_index[1], reload_interval_s=60), encoder=app_encoder)
    encoded = []
    with serve(app) as base:
        batcher = app.state.services.batcher
        process = batcher.process

        def slow(items):  # one batch in the encoder for a while: the others queue behind it
            encoded.append(len(items))
            time.sleep(1.0)
            return process(items)

        batcher.process = slow
        answers = []
        kept = threading.Thread(target=lambda: answers.append(httpx.post(
            base + "/search", content=BODY, headers={"Content-Type": "application/json"}, timeout=30)))
        kept.start()
        deadline = time.monotonic() + 10
        while not encoded and time.monotonic() < deadline:
            time.sleep(0.01)
        port = int(base.rsplit(":", 1)[1])
        for _ in range(5):  # searches sent whole, then their clients hang up while the encoder is busy
            with socket.create_connection(("127.0.0.1", port)) as client:
                client.sendall(REQUEST)
                time.sleep(0.05)  # the body arrives before the hang-up
        kept.join(timeout=30)
        time.sleep(1.5)  # what the batcher would have encoded next
        metrics = app.state.metrics.registry
        assert answers[0].status_code == 200
        assert encoded == [1]  # before: [1, 5], five searches encoded for nobody
        assert metrics.get_sample_value("sbir_queries_total", {"kind": "sketch"}) == 1
        assert metrics.get_sample_value("sbir_errors_total", {"type": "client_disconnected"}) == 5
