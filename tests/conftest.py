"""Shared fixtures. Tests never touch the network: every download goes to a loopback server."""

import os
from pathlib import Path

import numpy as np
import pytest

# failing asserts in the shared helpers (tests/helpers/) report their values like those in tests; this has
# to come before the helpers are imported, hence the E402 exemptions below
pytest.register_assert_rewrite("helpers")

from helpers.loopback import LoopbackServer  # noqa: E402

# the one real run of the .test workflow, shared by every slow workflow test module (session scope)
from helpers.workflow import tiny_workflow_run  # noqa: E402, F401

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _small_torch():
    # 2-core CI machines: one intra-op thread per test process keeps timings predictable.
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def kodak_dir():
    return REPO / "data" / "kodak"


@pytest.fixture
def http_server():
    """Factory of loopback HTTP servers (tests/helpers/loopback.py), stopped when the test ends.

    ``http_server(content, ranges=False, cut_after=None, hang=())`` starts a server over ``content``, a
    ``{url path: bytes}`` dict or a folder, and returns it: ``.url`` (``http://127.0.0.1:<port>``, no
    trailing slash), ``.requests`` / ``.paths`` (what was asked, in order), and the options as attributes.
    """
    servers: list[LoopbackServer] = []

    def start(content, **options) -> LoopbackServer:
        server = LoopbackServer(content, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
