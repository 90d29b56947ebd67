"""Fixtures: float64 runs, the real checkpoint from ../shared, a tiny teacher file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import REAL_VIT, tiny_teacher_file

from attnxfer.sweep import job_env


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs a worker per core, at most 8), each worker and
    the training processes it starts take their share of the cores (unless ``OMP_NUM_THREADS``
    says otherwise), so that workers training side by side do not oversubscribe them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = job_env(0, workers, gpus=0)["OMP_NUM_THREADS"]  # as a sweep shares them out
        os.environ["OMP_NUM_THREADS"] = threads
        torch.set_num_threads(int(threads))


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def real_vit_path() -> Path:
    if not REAL_VIT.is_file():
        pytest.skip(f"real checkpoint not found at {REAL_VIT} (../shared/data is absent)")
    return REAL_VIT


@pytest.fixture
def teacher_file(tmp_path) -> Path:
    """A tiny random teacher on disk (safetensors + JSON sidecar), matching TINY_STUDENT."""
    return tiny_teacher_file(tmp_path)
