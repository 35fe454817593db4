"""Whether the Hugging Face hub can be reached (no torch: the pool sources ask it too)."""

from __future__ import annotations

import socket
from urllib.parse import urlparse


def hub_unreachable_reason(offline: bool | None = None) -> str | None:
    """Why the Hugging Face hub cannot be reached, or None when it may be.

    In offline mode this is None: the libraries then read their local cache and fail fast
    by themselves. ``offline`` defaults to ``huggingface_hub``'s own flag, which it reads
    from ``HF_HUB_OFFLINE`` once, when imported. Otherwise a host name that does not
    resolve means no network, which is reported at once instead of after a minute of
    retries.
    """
    from huggingface_hub import constants

    if offline is None:
        offline = bool(constants.HF_HUB_OFFLINE)
    if offline:
        return None
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"no network: '{host}' does not resolve"
    return None
