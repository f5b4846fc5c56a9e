"""The trainer's side of DistributedDataParallel: process group, batch shards, agreed scalars.

A run launched by torchrun (``genbot train --nproc N``) has ``WORLD_SIZE`` ranks; each builds
the same model from the same seed, wraps it in ``DistributedDataParallel`` (gloo on CPU, nccl on
CUDA) and trains on its own shard of every batch. The shards are cut from one global batch of
``world × batch`` windows that every rank draws with the same generator, so N ranks × batch B
see exactly the windows one process with batch N×B would, in the same order; DDP's gradient
average then makes the two runs the same computation up to float rounding.

Each step the ranks also agree on two scalars in one ``all_reduce``: the mean training loss
(what is reported) and rank 0's elapsed time (what the ``--seconds`` budget and the LR schedule
read), so every rank stops at the same step and none is left waiting in a collective.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from genbot.errors import InvalidRequest
from genbot.training.launch import is_rank

_PR_SET_PDEATHSIG = 1
# A rank that waits longer than this in a collective gives up rather than hanging forever.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in its run: rank, world size and rank on this machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates, writes checkpoints and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one rank."""
        return self.world > 1


def start(device: str) -> tuple[Ranks, torch.device]:
    """Join the run's process group if torchrun started this process; returns the ranks and the device."""
    if not is_rank():
        return Ranks(), torch.device(device)
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    _die_with_launcher()
    if ranks.world == 1:
        return ranks, torch.device(device)
    if device == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise InvalidRequest(
                f"rank {ranks.rank} needs GPU {ranks.local_rank} but this machine has "
                f"{torch.cuda.device_count()}; lower --nproc"
            )
        torch.cuda.set_device(ranks.local_rank)
        where = torch.device("cuda", ranks.local_rank)
        dist.init_process_group("nccl", timeout=COLLECTIVE_TIMEOUT, device_id=where)
        return ranks, where
    _loopback_on_one_machine()
    dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    return ranks, torch.device(device)


def stop(ranks: Ranks) -> None:
    """Leave the process group (after the last collective).

    Every rank waits for the others first: a rank that tore its gloo pairs down while another was
    still finishing its last collective made that one abort (seen on a loaded machine).
    """
    if ranks.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(batch: Tensor, ranks: Ranks) -> Tensor:
    """This rank's rows of a global batch (world × B rows): rows rank·B … (rank+1)·B − 1."""
    per_rank = batch.shape[0] // ranks.world
    return batch[ranks.rank * per_rank : (ranks.rank + 1) * per_rank]


def agree(ranks: Ranks, loss: Tensor, elapsed: float) -> tuple[Tensor, float]:
    """The mean of the ranks' losses and rank 0's elapsed seconds, the same on every rank.

    One process returns its own loss tensor untouched (no device sync: it is read only when
    reported); ranks must read the clock they share every step, which costs one small sync.
    """
    if not ranks.distributed:
        return loss, elapsed
    values = torch.stack([loss.detach().float(), loss.new_tensor(elapsed if ranks.main else 0.0, dtype=torch.float32)])
    dist.all_reduce(values)
    return values[0] / ranks.world, float(values[1])


def gather_rows(ranks: Ranks, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Every rank's carried state joined along the batch dimension (layers, world·B, hidden)."""
    if not ranks.distributed:
        return state
    joined = []
    for part in state:
        pieces = [torch.empty_like(part) for _ in range(ranks.world)]
        dist.all_gather(pieces, part.contiguous())
        joined.append(torch.cat(pieces, dim=1))
    return tuple(joined)


def state_rows(ranks: Ranks, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """This rank's lanes of a carried state saved for the whole run (the inverse of ``gather_rows``)."""
    per_rank = state[0].shape[1] // ranks.world
    return tuple(s[:, ranks.rank * per_rank : (ranks.rank + 1) * per_rank].contiguous() for s in state)


def from_main(ranks: Ranks, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a small picklable object such as the run's summary)."""
    if not ranks.distributed:
        return value
    box = [value if ranks.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _loopback_on_one_machine() -> None:
    """Keep gloo on loopback when every rank is on this machine (unless the user chose an interface)."""
    single_node = os.environ.get("LOCAL_WORLD_SIZE") == os.environ.get("WORLD_SIZE")
    if single_node and "GLOO_SOCKET_IFNAME" not in os.environ and os.path.exists("/sys/class/net/lo"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"


def _die_with_launcher() -> None:
    """Get SIGKILL when torchrun dies (Linux): torchrun starts each rank in its own session, so
    killing the launcher's process group alone (a cancelled job, a killed worker) would leave
    ranks training on; with this every rank goes with it."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before prctl took effect
        os._exit(1)
