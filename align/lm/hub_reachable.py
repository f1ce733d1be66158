"""Is the model hub reachable?  One TCP connection, a few seconds at most, instead of a chain of retries.

``tokalign fit --lm org/model`` on a machine without network used to print a retry line per attempt before
failing; :func:`hub_reachable` lets the loader go straight to the local Hugging Face cache (and a one-line
error when the model is not there).
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host (``$HF_ENDPOINT`` or huggingface_hub's endpoint) accepts a TCP connection."""
    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        port = url.port or (80 if url.scheme == "http" else 443)
        socket.create_connection((url.hostname or "", port), timeout).close()
    except (OSError, ValueError):
        log.debug("the hub at %s is not reachable: using the local Hugging Face cache only", url.geturl())
        return False
    return True
