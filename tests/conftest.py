import os
import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_per_worker():
    # tests run in parallel (pytest -n 2): one torch thread each avoids oversubscribing 2 cores
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _same_random_state_in_any_order():
    """Every test starts from the same global random state, whichever tests ran before it on its
    worker (pytest-xdist deals them out differently from run to run): a test that draws from the
    global generators draws the same numbers in every run, so it passes or fails every time."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
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
