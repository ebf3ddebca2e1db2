"""Who may see what: API keys (header X-API-Key) and signed photo URLs for `<img>`, which cannot send headers.

With no key configured everything is open and photo URLs are plain. With keys, a photo needs a valid
key header or a signature `sig = HMAC-SHA256(secret, "id|size|v|exp")` (`v`: the content tag) whose
expiry `exp` (Unix seconds) has not passed; changing any of them voids it. Every comparison is
`hmac.compare_digest` on fixed-length digests, so a wrong key or signature takes the same time
whatever prefix of it matches, and key lengths do not leak either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Sequence
from urllib.parse import quote

from .query_fields import canonical_int

MIN_KEY_LENGTH = 16  # characters; `python -c "import secrets; print(secrets.token_urlsafe(32))"` makes a good one
_DERIVE_CONTEXT = b"sbir signed photo urls v1"
_MAX_SIG_CHARS = 128  # longer than any signature: refused before hashing
_MAX_EXP_DIGITS = 12


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "replace")).digest()


class Access:
    """The configured keys and the photo URL signer; `required` is False when no key is set (all open)."""

    def __init__(self, keys: Sequence[str], *, secret: str | None = None, url_ttl_s: int = 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self._key_digests = tuple(_digest(key) for key in dict.fromkeys(keys))
        # Without a configured secret it is derived from the key set: every replica with the same keys signs
        # alike, and URLs issued under a removed key stop working after the restart.
        derived = hmac.new(_DERIVE_CONTEXT, b"".join(sorted(self._key_digests)), hashlib.sha256).digest()
        self._secret = secret.encode() if secret else derived
        self.url_ttl_s = url_ttl_s
        self.clock = clock
        # Expiries are rounded up to this step, so the same photo gets the same URL for a while and browsers
        # can cache it; a URL lives between url_ttl_s and url_ttl_s + step seconds.
        self.step_s = max(1, url_ttl_s // 12)

    @classmethod
    def from_settings(cls, settings) -> Access:
        """From app.settings.Settings: its keys, URL secret and URL lifetime."""
        secret = settings.url_secret.get_secret_value() if settings.url_secret else None
        return cls(settings.api_key_list, secret=secret, url_ttl_s=settings.photo_url_ttl_s)

    @property
    def required(self) -> bool:
        return bool(self._key_digests)

    def key_ok(self, candidate: str | None) -> bool:
        """True when no key is configured, or `candidate` is one of the keys (compared against all of them)."""
        if not self.required:
            return True
        if candidate is None:
            return False
        probe = _digest(candidate)
        matched = False
        for digest in self._key_digests:  # no early exit: the time does not tell which key matched
            matched |= hmac.compare_digest(probe, digest)
        return matched

    def key_id(self, key: str) -> str:
        """A short name for a key that does not reveal it (per-client limits count by it)."""
        return "key " + hmac.new(self._secret, _digest(key), hashlib.sha256).hexdigest()[:16]

    def photo_url(self, photo_id: int, size: int | None, tag: str) -> str:
        """The URL of a photo (or thumbnail) for search results: signed when keys are configured."""
        # built by hand: ints, a quoted tag and a base64url signature need no urlencode (half the cost of a URL)
        sized = f"size={size}&" if size else ""
        url = f"/photos/{photo_id}?{sized}v={quote(tag, safe='')}"
        if not self.required:
            return url
        expires = math.ceil((self.clock() + self.url_ttl_s) / self.step_s) * self.step_s
        return f"{url}&exp={expires}&sig={self.signature(photo_id, size, tag, expires)}"

    def signature(self, photo_id: int, size: int | None, tag: str | None, expires: int) -> str:
        # exp is last and all digits, so no other (tag, exp) pair spells the same message
        message = f"{photo_id}|{size or 0}|{tag or ''}|{expires}".encode("utf-8", "replace")
        mac = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def signed_seconds_left(self, photo_id: int, size: int | None, tag: str | None, exp: str | None,
                            sig: str | None) -> int | None:
        """Seconds a signed photo URL stays valid; None when the signature is missing, malformed, wrong or expired."""
        if exp is None or sig is None or len(sig) > _MAX_SIG_CHARS:
            return None
        expires = canonical_int(exp) if len(exp) <= _MAX_EXP_DIGITS else None
        if expires is None:  # only the form photo_url writes: "0123" or " 123" is not the signed URL
            return None
        expected = self.signature(photo_id, size, tag, expires)
        if not hmac.compare_digest(_digest(expected), _digest(sig)):
            return None
        left = expires - math.floor(self.clock())
        return left if left > 0 else None
