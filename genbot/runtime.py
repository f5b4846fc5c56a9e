"""Process-wide torch settings, so front ends configure torch without importing it themselves."""

from __future__ import annotations


def set_torch_threads(threads: int) -> None:
    """Use ``threads`` torch threads in this process (0 keeps torch's default).

    Serving uses one: on a busy 2-core machine a 2-thread stepper slows down several-fold when
    another process competes for a core, while a 1-thread one is unaffected.
    """
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())
