"""What stands on every request's path costs no more than it must (issue 22): no thread hops for dependencies, and
the HTTP parser is a setting (httptools where installed, h11 otherwise)."""

from __future__ import annotations

import inspect

import pytest
from fastapi.routing import APIRoute

from app.__main__ import build_parser
from app.routers import admin, admin_gallery, health, page, photos, search
from app.server import PROTOCOLS, server_options
from app.settings import Settings

ROUTERS = (admin.router, admin_gallery.router, health.router, page.router, photos.router, search.router)


def _dependency_calls(dependant) -> list:
    calls = []
    for dependency in dependant.dependencies:
        calls.append(dependency.call)
        calls.extend(_dependency_calls(dependency))
    return calls


def test_every_route_dependency_runs_on_the_event_loop():
    """FastAPI runs a plain `def` dependency in its thread pool: a round trip through a worker thread per request for
    a look-up on the app's state (a fifth of the event loop's CPU at c=16). The app's own dependencies are async."""
    calls = {call for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)
             for call in _dependency_calls(route.dependant) if call.__module__.startswith("app.")}
    assert {call.__name__ for call in calls} >= {"get_services", "require_search_key", "require_admin_key"}
    assert [call.__qualname__ for call in calls if not inspect.iscoroutinefunction(call)] == []


@pytest.mark.parametrize("parser", sorted(PROTOCOLS))
def test_the_http_parser_is_a_setting_and_a_flag(monkeypatch, parser):
    monkeypatch.setenv("SBIR_HTTP_PARSER", parser)
    settings = Settings(header_timeout_s=3.0)
    protocol = server_options(settings)["http"]
    assert issubclass(protocol, PROTOCOLS[parser]) and protocol.header_timeout_s == 3.0
    assert build_parser().parse_args(["--http-parser", parser]).http_parser == parser


def test_an_unknown_http_parser_is_refused(monkeypatch):
    monkeypatch.setenv("SBIR_HTTP_PARSER", "picohttp")
    with pytest.raises(ValueError, match="http_parser"):
        Settings()
