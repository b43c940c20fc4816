"""Shared fixtures. Tests never touch the network: every download goes to a loopback server."""

import os
from pathlib import Path

import numpy as np
import pytest

# the one real run of the .test workflow, shared by every slow workflow test module (session scope)
from workflow_fixtures import tiny_workflow_run  # noqa: F401

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
