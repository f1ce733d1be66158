"""A module-scoped fixture that runs tiny models on one torch thread (import it into a conftest as ``_one_thread``).

Tiny models run fastest on one thread; on a shared 2-core machine two threads can be 30x slower.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
