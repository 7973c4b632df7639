"""Where FAISS searches: on a GPU (faiss-gpu) when one is visible, else on the CPU (faiss-cpu).

Decided once at start-up and logged, so an operator sees which one serves. ``Dockerfile.gpu``
installs faiss-gpu; the CPU image and development machines have faiss-cpu, whose
``get_num_gpus`` is absent or 0, so "auto" picks the CPU there. Results are the same on either
(exact inner product; see tests/engine/retrieval/test_device.py) within float tolerance.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CHOICES = ("auto", "gpu", "cpu")


def faiss_gpu_count() -> int:
    """GPUs the installed faiss build can use (0 for faiss-cpu, or without a visible GPU)."""
    try:
        import faiss
    except ImportError:
        return 0
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def select_faiss_device(prefer: str = "auto") -> str:
    """``"gpu"`` or ``"cpu"`` for ``prefer`` (auto, gpu, cpu); "gpu" without one is an error."""
    if prefer not in CHOICES:
        raise ValueError(f"faiss device {prefer!r}: expected one of {list(CHOICES)}")
    gpus = faiss_gpu_count() if prefer != "cpu" else 0
    if prefer == "gpu" and gpus == 0:
        raise ValueError("faiss device 'gpu' requested, but faiss sees no GPU (faiss-cpu build?)")
    device = "gpu" if gpus > 0 else "cpu"
    log.info("retrieval: FAISS searches on the %s (%d GPU(s) visible to faiss)", device, gpus)
    return device
