import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_per_worker():
    # tests run in parallel (pytest -n 2): one torch thread each avoids oversubscribing 2 cores
    torch.set_num_threads(1)
    yield
