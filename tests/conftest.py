"""Shared test set-up: one thread (the machines are shared), a private data cache."""

from __future__ import annotations

import os

import pytest
import torch

# Several processes with 2 threads each on 2 cores slow torch down twentyfold; one is steady.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Decoded data sets go to a per-session cache, never the user's."""
    if "ICCKD_CACHE_DIR" not in os.environ:
        os.environ["ICCKD_CACHE_DIR"] = str(tmp_path_factory.mktemp("icckd-cache"))
