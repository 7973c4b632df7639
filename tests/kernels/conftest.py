"""Kernel tests run on a CUDA GPU when one is visible, else through Triton's interpreter on CPU."""

from __future__ import annotations

import os

import pytest

try:
    import torch

    _CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover - torch is a dependency
    _CUDA = False

if not _CUDA:
    # Must be set before the first @triton.jit runs (kernels are built lazily, on first call).
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def device() -> str:
    pytest.importorskip("triton")
    return "cuda" if _CUDA else "cpu"
