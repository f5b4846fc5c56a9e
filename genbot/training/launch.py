"""Launching one training run over several processes with ``torchrun`` (``torch.distributed.run``).

``genbot train --nproc N`` and a job worker with ``nproc`` > 1 both run the same ``genbot train``
command line under ``torchrun``; each process it starts (a *rank*) runs the trainer under
DistributedDataParallel (see ``genbot.training.distributed``). This module builds the launcher's
command and needs no torch: it is imported by the CLI and the job worker.

One machine is ``--standalone`` (torchrun picks a free port on loopback); several machines
meet at a rendezvous endpoint (``HOST:PORT``) that every node is started with.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from genbot.errors import InvalidRequest

MAX_NPROC = 64  # processes per machine a run may ask for
MAX_NNODES = 1024  # machines a run may span
# Variables torchrun sets in every process it starts; their presence means "I am a rank".
_RANK_MARKERS = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK")


def is_rank(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by torchrun (so it trains rather than launches)."""
    env = os.environ if environ is None else environ
    return all(name in env for name in _RANK_MARKERS)


def is_main_rank(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is rank 0 (or not distributed at all): the one that prints and writes."""
    env = os.environ if environ is None else environ
    return not is_rank(env) or env.get("RANK", "0") == "0"


def torchrun_command(child: list[str], *, nproc: int, nnodes: int = 1, rdzv_endpoint: str = "") -> list[str]:
    """The command that runs ``child`` (a full command line) as ``nproc`` ranks on this machine.

    ``--no-python`` makes torchrun run ``child`` as given, so each rank is started exactly as a
    single training process would be (``python -I …``: isolated mode, no current directory on the
    path). With ``nnodes`` > 1 the ranks of all machines meet at ``rdzv_endpoint``.
    """
    check_launch(nproc, nnodes, rdzv_endpoint)
    command = [sys.executable, "-I", "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--max-restarts=0"]
    if nnodes == 1 and not rdzv_endpoint:
        # One machine: rendezvous on a free loopback port, nothing listens on other interfaces.
        command += ["--standalone", "--local-addr=127.0.0.1"]
    else:
        command += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    # "--" ends torchrun's own options: none of the child's words can be read as one of them.
    return [*command, "--no-python", "--", *child]


def check_launch(nproc: int, nnodes: int, rdzv_endpoint: str) -> None:
    """Refuse a launch torchrun could not make sense of, with a message naming the option."""
    if not 1 <= nproc <= MAX_NPROC:
        raise InvalidRequest(f"--nproc must be between 1 and {MAX_NPROC}, got {nproc}")
    if not 1 <= nnodes <= MAX_NNODES:
        raise InvalidRequest(f"--nnodes must be between 1 and {MAX_NNODES}, got {nnodes}")
    if nnodes > 1 and not rdzv_endpoint:
        raise InvalidRequest("--nnodes above 1 needs --rdzv-endpoint HOST:PORT (the same on every machine)")
    if rdzv_endpoint:
        host, sep, port = rdzv_endpoint.rpartition(":")
        if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidRequest(f"--rdzv-endpoint must be HOST:PORT, got {rdzv_endpoint[:80]!r}")
        if any(c.isspace() or c == "\x00" for c in rdzv_endpoint) or rdzv_endpoint.startswith("-"):
            raise InvalidRequest(f"--rdzv-endpoint must be HOST:PORT, got {rdzv_endpoint[:80]!r}")
