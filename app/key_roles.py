"""Two key sets in one header: search keys (SBIR_API_KEY/S) and admin keys (SBIR_ADMIN_KEYS), never crossing.

Both travel in X-API-Key. A key of the other set is refused with 403 (it is known, just not for this), so a
client configured with the wrong key learns that at once instead of through a vague 401. Admin routes are off
(403) until admin keys are configured: changing files on the server is never open.
"""

from __future__ import annotations

from fastapi import Header, Request

from .access import Access
from .errors import APIError
from .services import get_access, require_api_key
from .settings import Settings

_WRONG_FOR_SEARCH = ("This is an admin key (SBIR_ADMIN_KEYS); searches and photos need a search key "
                     "(SBIR_API_KEY/S) or a signed photo URL.")


def admin_access(settings: Settings) -> Access:
    """The admin key set of app.settings.Settings (its own Access: same constant-time comparison)."""
    return Access(settings.admin_key_list)


def _admin(request: Request) -> Access:
    return request.app.state.admin_access


def is_admin_key(request: Request, key: str | None) -> bool:
    admin = _admin(request)
    return key is not None and admin.required and admin.key_ok(key)


async def require_search_key(request: Request, x_api_key: str | None = Header(
        None, description="a search key, when one is configured")) -> None:
    """403 for an admin key (also on an open service: it was sent by mistake), else the search key rule (401)."""
    refuse_admin_key(request, x_api_key)
    require_api_key(request, x_api_key)


def require_metrics_key(request: Request, key: str | None) -> None:
    """GET /metrics with SBIR_METRICS_REQUIRE_KEY: a search key or an admin key (the monitoring may hold either;
    with only admin keys configured, an admin key). Settings refuse the switch when no key is configured."""
    if is_admin_key(request, key) or get_access(request).required and get_access(request).key_ok(key):
        return
    raise APIError(401, "unauthorized", "A valid X-API-Key header is required (a search or an admin key).")


def refuse_admin_key(request: Request, key: str | None) -> None:
    """403 when ``key`` is an admin key: it is never accepted where a search key is (searches, photos)."""
    if is_admin_key(request, key):
        raise APIError(403, "wrong_key", _WRONG_FOR_SEARCH)


async def require_admin_key(request: Request, x_api_key: str | None = Header(
        None, description="an admin key (SBIR_ADMIN_KEYS)")) -> None:
    """403 when no admin key is configured or a search key is sent; 401 when the header is none of the keys."""
    if not _admin(request).required:
        raise APIError(403, "forbidden", "Admin actions need admin keys (SBIR_ADMIN_KEYS) on the service.")
    if is_admin_key(request, x_api_key):
        return
    if x_api_key is not None and get_access(request).required and get_access(request).key_ok(x_api_key):
        raise APIError(403, "wrong_key", "This is a search key; admin routes need an admin key (SBIR_ADMIN_KEYS).")
    raise APIError(401, "unauthorized", "A valid admin key is required in the X-API-Key header.")
