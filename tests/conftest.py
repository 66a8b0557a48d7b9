"""Shared test setup.

GPU tests carry @pytest.mark.gpu and SKIP (never pass) without CUDA. On a GPU the shared-memory
opt-in is capped at SM120's 101 376 B (K2K_SMEM_LIMIT, read by every launcher), so a green H200 run
means every launch would also fit a workstation Blackwell GPU."""
import os

import pytest
import torch

os.environ.setdefault("K2K_SMEM_LIMIT", "101376")

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
