"""Pinned TLS: an engine is trusted by the SHA-256 of its job's own certificate."""
from __future__ import annotations

from typing import Optional, Union

import aiohttp

from .endpoints import Endpoint

_PINS: dict[str, aiohttp.Fingerprint] = {}


def tls_for(endpoint: Endpoint) -> Union[aiohttp.Fingerprint, bool]:
    return pinned_tls(endpoint.fingerprint)


def pinned_tls(fingerprint: Optional[str]) -> Union[aiohttp.Fingerprint, bool]:
    """How to check an engine's certificate: its pinned SHA-256 (hex), or the system's CAs.

    One ``Fingerprint`` object per certificate: aiohttp pools connections by it (identity), so
    the handshake stays off the per-request path.
    """
    if not fingerprint:
        return True
    pin = _PINS.get(fingerprint)
    if pin is None:
        if len(_PINS) > 1024:
            _PINS.clear()
        pin = _PINS[fingerprint] = aiohttp.Fingerprint(bytes.fromhex(fingerprint))
    return pin
