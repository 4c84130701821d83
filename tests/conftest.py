import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_per_worker():
    # tests run in parallel (pytest -n 2): one torch thread each avoids oversubscribing 2 cores
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session", autouse=True)
def _feature_cache(tmp_path_factory):
    """Feature networks (image metrics) are cached in one folder shared by the test workers, never
    in the user's ~/.cache: the digits network is trained once per test session."""
    root = tmp_path_factory.getbasetemp()
    shared = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "genlab-cache"
    shared.mkdir(exist_ok=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("GENLAB_CACHE", str(shared))
    mp.setenv("GENLAB_TINY_RUNS", str(shared.parent / "genlab-tiny-runs"))  # tests/families.py
    yield shared
    mp.undo()
