"""Fixtures: float64 runs, the real checkpoint from ../shared, a tiny teacher file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import REAL_VIT, tiny_teacher_file


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
