"""GPU memory guard: give cached blocks back after large batches and report what is in use.

Nothing here imports torch unless an engine already did, so a PocketSphinx-only node stays
torch-free.
"""

from __future__ import annotations

import sys
from typing import Any


def _cuda() -> Any:
    """torch.cuda when torch is loaded and has initialized CUDA, else None."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
    except AttributeError:  # torch is being imported by another thread right now
        return None
    return torch.cuda


class MemoryGuard:
    def __init__(self, empty_cache_after_audio_seconds: float = 120.0) -> None:
        self.empty_cache_after_audio_seconds = empty_cache_after_audio_seconds

    def after_batch(self, audio_seconds: float) -> None:
        cuda = _cuda()
        if cuda is None:
            return
        if audio_seconds >= self.empty_cache_after_audio_seconds:
            # Long batches leave large activation blocks cached; later small batches do not need
            # them and other processes on the GPU might.
            cuda.empty_cache()
        self.report()

    def report(self) -> dict[str, int] | None:
        """Bytes allocated and reserved on the current CUDA device, or None without CUDA."""
        from inference import metrics

        cuda = _cuda()
        if cuda is None:
            return None
        device = str(cuda.current_device())
        allocated, reserved = int(cuda.memory_allocated()), int(cuda.memory_reserved())
        metrics.gpu_memory_allocated.labels(device).set(allocated)
        metrics.gpu_memory_reserved.labels(device).set(reserved)
        return {
            "allocated_bytes": allocated,
            "reserved_bytes": reserved,
            "peak_allocated_bytes": int(cuda.max_memory_allocated()),
        }


def free_cuda_cache() -> None:
    cuda = _cuda()
    if cuda is not None:
        cuda.empty_cache()


def is_cuda_oom(error: BaseException) -> bool:
    cuda = _cuda()
    return cuda is not None and isinstance(error, cuda.OutOfMemoryError)
