"""The training loop: truncated BPTT with AdamW, warmup + cosine LR, clipping and evaluation.

``train(config, corpus, out)`` writes the best model (by block val loss) as a model folder in
``out`` and the resumable latest state in ``out/checkpoint``. Progress goes to a callback as
plain dict events (``start``, ``step``, ``eval``, ``done``), which the CLI renders as a progress
bar or JSON lines and the job worker stores.

Started by torchrun (``genbot train --nproc N``), every rank runs this same loop on its shard of
each batch under DistributedDataParallel (``genbot.training.distributed``); rank 0 alone
evaluates, writes the model folder and checkpoint, and sends events. ``batch`` is per rank, so
the global batch is ``world × batch``.
"""

from __future__ import annotations

import copy
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from genbot.errors import CheckpointError, InvalidRequest
from genbot.networks.card import ModelCard, SamplingDefaults, Weights
from genbot.networks.charrnn import CharRNN, CharRNNConfig, State
from genbot.networks.checkpoint import LoadedGenerator, architecture_of, load_model, save_model
from genbot.networks.vocab import Vocab
from genbot.training import distributed, evaluate
from genbot.training.data import CorpusSplit, SequentialWindows, random_windows, read_corpus, split_corpus
from genbot.training.distributed import Ranks
from genbot.training.finetune import extend_vocab
from genbot.training.options import TrainingOptions
from genbot.training.state import Counters, load_state, save_state

Event = dict[str, Any]
EventSink = Callable[[Event], None]
CHECKPOINT_DIR = "checkpoint"


@dataclass
class TrainConfig:
    """Everything that decides a training run; recorded in the model card."""

    cell: str = "lstm"  # rnn | lstm | gru (ignored when fine-tuning: the parent's is kept)
    layers: int = 2  # stacked recurrent layers
    hidden: int = 256  # units per layer
    embedding: int = 64  # character embedding size
    dropout: float = 0.0  # between layers and before the head
    block: int = 100  # truncated-BPTT window, in characters
    batch: int = 64  # windows per step
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the end of the budget
    warmup: int = 0  # linear warmup steps (0: none; Adam on char-RNNs trains well from the first step)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    grad_clip: float = 5.0  # max global gradient norm (guards against exploding gradients)
    carry_state: bool = False  # carry hidden state across consecutive windows (char-rnn style)
    bf16: bool = False  # bfloat16 autocast for the forward pass
    device: str = "cpu"  # cpu | cuda
    threads: int = 0  # torch threads (0: torch's default)
    steps: int | None = None  # budget: optimizer steps …
    epochs: float | None = None  # … or passes over the train split …
    seconds: float | None = None  # … or wall-clock training seconds
    eval_every: int = 0  # steps between evaluations (0: ten times per budget, at least every 500)
    eval_iters: int = 10  # batches of 64 val blocks per periodic evaluation
    final_eval_iters: int = 50  # batches for the final, reported evaluation (nanoGPT uses 200 x 12)
    seed: int = 1337  # initialisation, batches and dropout
    val_fraction: float = 0.1  # tail of the corpus held out for validation
    save_dtype: str = "float32"  # dtype of the stored weights (float16 halves the file)
    nproc: int = 1  # training processes per machine (torchrun ranks; set by genbot train --nproc)
    name: str = ""  # model name in the card (default: the output folder's name)
    parent: str = ""  # model folder to fine-tune from ("" trains from scratch)

    def validate(self) -> None:
        """Reject nonsensical hyperparameters with a message naming the option."""
        TrainingOptions.parse(self.options())  # the same schema (types, ranges) a retrain job is checked against
        checks = [
            (self.eval_every >= 0, "--eval-every must be 0 (automatic) or more"),
            (self.threads >= 0, "--threads must be 0 or more"),
            (0.0 < self.val_fraction < 0.5, "val fraction must be in (0, 0.5)"),
            (0.0 <= self.min_lr_ratio <= 1.0, "min LR ratio must be in [0, 1]"),
        ]
        budgets = [b for b in (self.steps, self.epochs, self.seconds) if b is not None]
        checks.append((len(budgets) == 1, "give exactly one budget: --steps, --epochs or --seconds"))
        checks.append((all(b > 0 and math.isfinite(b) for b in budgets), "the budget must be positive"))
        for ok, message in checks:
            if not ok:
                raise InvalidRequest(message)

    def options(self) -> dict[str, Any]:
        """This run's hyperparameters as ``TrainingOptions`` names them (``eval_every`` 0, automatic, left out)."""
        values = {name: getattr(self, _CONFIG_NAMES.get(name, name)) for name in TrainingOptions.model_fields}
        if not self.eval_every:
            del values["eval_every"]
        return values


# TrainingOptions names whose TrainConfig field is spelled differently.
_CONFIG_NAMES = {"emb": "embedding"}


@dataclass
class TrainResult:
    """Summary of a finished run (the ``--json`` output)."""

    out: str
    steps: int
    seconds: float
    chars_per_s: float
    params: int
    losses: dict[str, float]
    added_chars: list[str] = field(default_factory=list)
    sample: str = ""
    world_size: int = 1  # training processes (ranks) of the run


log = logging.getLogger(__name__)


BF16_SLOWDOWN_ALLOWED = 1.2  # bfloat16 is asked for to go faster; much slower than float32 defeats it


def bf16_refusal(model: CharRNN, device: torch.device, batch: int = 8, block: int = 8) -> str | None:
    """Why bfloat16 autocast will not train ``model`` on ``device``; None where it will.

    Tried and timed, not assumed: oneDNN has no bfloat16 LSTM on CPUs without AVX-512 (it raises
    at the first batch), and GRU and vanilla RNN run there emulated, ten times slower than
    float32. A few forward and backward passes on a copy keep the real network's gradients
    untouched.
    """
    probe = copy.deepcopy(model).train()
    x = torch.zeros(batch, block, dtype=torch.long, device=device)
    try:
        fp32 = _pass_seconds(probe, x, bf16=False)
        half = _pass_seconds(probe, x, bf16=True)
    except RuntimeError as error:
        return str(error).split(". ")[0] or type(error).__name__  # oneDNN appends how to debug it
    if device.type == "cpu" and half > BF16_SLOWDOWN_ALLOWED * fp32:
        return f"bfloat16 runs {half / fp32:.1f}x slower than float32 on this CPU"
    return None


def _pass_seconds(net: CharRNN, x: torch.Tensor, bf16: bool, passes: int = 2) -> float:
    """The quickest of a few forward + backward passes (the first also warms the kernels up)."""
    best = math.inf
    for _ in range(passes):
        t0 = time.perf_counter()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, _ = net(x)
        logits.float().sum().backward()
        best = min(best, time.perf_counter() - t0)
    return best


class _Run:
    """Mutable state of one training run; the loop's helpers read and update it."""

    def __init__(
        self, cfg: TrainConfig, model: CharRNN, data: CorpusSplit, out: Path, sink: EventSink, ranks: Ranks
    ) -> None:
        self.cfg, self.model, self.data, self.out, self.sink, self.ranks = cfg, model, data, out, sink, ranks
        self.device = model.head.weight.device
        self.bf16_refused = bf16_refusal(model, self.device, cfg.batch) if cfg.bf16 else None
        self.bf16 = cfg.bf16 and self.bf16_refused is None
        if self.bf16_refused:
            log.warning("bf16 autocast cannot train here (%s): training in float32", self.bf16_refused)
        # The module the training steps call: DDP averages the gradients across ranks in backward.
        self.net: torch.nn.Module = _wrap(model, self.device) if ranks.distributed else model
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # The same seed on every rank: all draw the same global batch and keep only their shard.
        self.batch_gen = torch.Generator().manual_seed(cfg.seed)
        self.global_batch = cfg.batch * ranks.world
        self.counters = Counters()
        self.carry: State | None = None
        self.windows = SequentialWindows(data.train, self.global_batch, cfg.block) if cfg.carry_state else None
        self.total_steps = _total_steps(cfg, len(data.train), ranks.world)
        self.eval_every = cfg.eval_every or max(1, min(500, (self.total_steps or 5000) // 10))
        self.card_extra: dict[str, Any] = {}

    def progress(self) -> float:
        """Fraction of the budget spent, for the LR schedule and the progress bar."""
        if self.cfg.seconds:
            return min(1.0, self.counters.elapsed / self.cfg.seconds)
        return min(1.0, self.counters.step / max(1, self.total_steps or 1))

    def done(self) -> bool:
        """Whether the budget is spent."""
        if self.cfg.seconds:
            return self.counters.elapsed >= self.cfg.seconds
        return self.counters.step >= (self.total_steps or 0)


def train(
    cfg: TrainConfig,
    corpus: Path,
    out: Path,
    sink: EventSink | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train (or fine-tune, or resume) a CharRNN on ``corpus``; the best model lands in ``out``.

    Under torchrun every rank calls this; each returns rank 0's result, and only rank 0's
    ``sink`` hears events.
    """
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ranks, device = distributed.start(cfg.device)
    try:
        return _train(cfg, corpus, out, sink if ranks.main else None, resume, ranks, device)
    finally:
        distributed.stop(ranks)


def _train(
    cfg: TrainConfig, corpus: Path, out: Path, sink: EventSink | None, resume: bool, ranks: Ranks, device: torch.device
) -> TrainResult:
    torch.manual_seed(cfg.seed)
    text = read_corpus(corpus)
    model, vocab, added = _initial_model(cfg, text, out, resume)
    data = split_corpus(text, vocab, cfg.block, cfg.val_fraction)
    run = _Run(cfg, model.to(device).train(), data, out, sink or (lambda e: None), ranks)
    run.card_extra = {"corpus": Path(corpus).name, "added_chars": added}
    if resume and (out / CHECKPOINT_DIR / "state.json").exists():
        _restore(run)
    if ranks.distributed:
        # Each rank its own dropout masks (the batch windows have their own generator, shared by all).
        torch.manual_seed((cfg.seed * 1_000_003 + run.counters.step * 1_009 + ranks.rank) % 2**63)
    run.sink(_start_event(run, added))
    _loop(run)
    result: TrainResult = distributed.from_main(ranks, _finish(run, added) if ranks.main else None)
    return result


def _wrap(model: CharRNN, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _initial_model(cfg: TrainConfig, text: str, out: Path, resume: bool) -> tuple[CharRNN, Vocab, list[str]]:
    """The model to start from: a resume checkpoint, a parent to fine-tune, or a fresh one."""
    ckpt = out / CHECKPOINT_DIR
    if resume and (ckpt / "state.json").exists():
        loaded = load_model(ckpt)
        missing = sorted(set(text) - set(loaded.vocab.chars))
        if missing:
            raise CheckpointError(f"{ckpt}: the corpus has characters the checkpoint lacks: {missing!r}")
        return loaded.network.train().requires_grad_(True), loaded.vocab, []
    if cfg.parent:
        parent = load_model(Path(cfg.parent))
        model, vocab, added = extend_vocab(parent.network, parent.vocab, text)
        return model.train().requires_grad_(True), vocab, added
    vocab = Vocab.from_text(text)
    arch = CharRNNConfig(len(vocab), cfg.cell, cfg.layers, cfg.hidden, cfg.embedding, cfg.dropout)  # type: ignore[arg-type]
    return CharRNN(arch), vocab, []


def _total_steps(cfg: TrainConfig, n_train: int, world: int = 1) -> int | None:
    if cfg.steps:
        return cfg.steps
    if cfg.epochs:  # an epoch is the same text however many ranks share it
        return max(1, math.ceil(cfg.epochs * n_train / (cfg.batch * world * cfg.block)))
    return None


def _lr_at(run: _Run) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio over the budget."""
    cfg = run.cfg
    if run.counters.step < cfg.warmup:
        return cfg.lr * (run.counters.step + 1) / cfg.warmup
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * run.progress()))


def _loop(run: _Run) -> None:
    last_report = time.perf_counter()
    while not run.done():
        t0 = time.perf_counter()
        step_loss = _train_step(run)
        # Every rank takes rank 0's clock, so done() and the LR schedule agree on all of them.
        loss, run.counters.elapsed = distributed.agree(
            run.ranks, step_loss, run.counters.elapsed + time.perf_counter() - t0
        )
        run.counters.step += 1
        run.counters.chars += run.global_batch * run.cfg.block
        if run.counters.step % run.eval_every == 0 or run.done():
            _evaluate(run, loss.item())
        elif time.perf_counter() - last_report > 1.0:
            run.sink(_step_event(run, loss.item()))
            last_report = time.perf_counter()


def _batch(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's shard of the step's global batch of windows."""
    if run.windows is None:
        x, y = random_windows(run.data.train, run.global_batch, run.cfg.block, run.batch_gen)
    else:
        x, y, fresh = run.windows.next()
        if fresh:
            run.carry = None
    x, y = distributed.shard(x, run.ranks), distributed.shard(y, run.ranks)
    return x.to(run.device), y.to(run.device)


def _train_step(run: _Run) -> torch.Tensor:
    """One optimizer step on one batch of windows."""
    for group in run.opt.param_groups:
        group["lr"] = _lr_at(run)
    x, y = _batch(run)  # (B, T) each
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        logits, state = run.net(x, run.carry)  # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.opt.step()
    if run.windows is not None:
        # Truncated BPTT: keep the state's values, drop its graph.
        run.carry = tuple(s.detach() for s in state)
    return loss.detach()


def _evaluate(run: _Run, train_loss: float) -> None:
    """Periodic evaluation: keep the best model, write the resume state, report a sample (rank 0)."""
    # Carried state is the one thing only its own rank holds; rank 0 saves every rank's lanes.
    carry = distributed.gather_rows(run.ranks, run.carry) if run.carry is not None else None
    if not run.ranks.main:
        return
    val = evaluate.block_loss(run.model, run.data.val, iters=run.cfg.eval_iters)
    improved = val < run.counters.best_val
    if improved:
        run.counters.best_val = val
        _save_model(run, run.out, {"val_block": round(val, 4)})
    run.counters.history.append({"step": run.counters.step, "train_loss": train_loss, "val_loss": val})
    if run.windows is not None:
        run.counters.window_position = run.windows.position
    _save_checkpoint(run, carry)
    event = _step_event(run, train_loss) | {
        "event": "eval",
        "val_loss": round(val, 4),
        "best_val_loss": round(run.counters.best_val, 4),
        "improved": improved,
        "sample": sample_text(run.model, run.data.vocab, 200, seed=run.counters.step),
    }
    run.sink(event)


def _save_model(run: _Run, folder: Path, metrics: dict[str, float]) -> None:
    card = ModelCard(
        name=run.cfg.name or run.out.resolve().name,
        corpus=run.card_extra.get("corpus", ""),
        architecture=architecture_of(run.model.config),
        weights=Weights(sha256=""),
        sampling=SamplingDefaults(),
        metrics=metrics,
        training=_training_record(run),
    )
    save_model(folder, run.model, run.data.vocab, card, dtype=run.cfg.save_dtype)


def _save_checkpoint(run: _Run, carry: State | None) -> None:
    folder = run.out / CHECKPOINT_DIR
    card = ModelCard(
        name="checkpoint",
        architecture=architecture_of(run.model.config),
        weights=Weights(sha256=""),
        training={"config": asdict(run.cfg)},
    )
    save_model(folder, run.model, run.data.vocab, card, dtype="float32")
    save_state(folder, run.opt, run.counters, run.batch_gen, carry)


def _restore(run: _Run) -> None:
    restored = load_state(run.out / CHECKPOINT_DIR, run.opt, run.batch_gen, run.device)
    run.counters = restored.counters
    carry = restored.carry
    # A checkpoint holds the carried state of all world × batch lanes; a different global batch starts fresh.
    if carry is not None and carry[0].shape[1] == run.global_batch:
        run.carry = distributed.state_rows(run.ranks, carry)
    if run.windows is not None:
        run.windows.position = run.counters.window_position


def _training_record(run: _Run) -> dict[str, Any]:
    c = run.counters
    return {
        "config": {k: v for k, v in asdict(run.cfg).items() if v is not None},
        "steps": c.step,
        "seconds": round(c.elapsed, 1),
        "chars_per_s": round(c.chars / c.elapsed) if c.elapsed else 0,
        "hardware": _hardware(run.device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "added_chars": "".join(run.card_extra.get("added_chars", [])),
        "world_size": run.ranks.world,
        "bf16_used": run.bf16,
    }


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU"


def _start_event(run: _Run, added: list[str]) -> Event:
    return {
        "event": "start",
        "params": run.model.num_parameters(),
        "vocab": len(run.data.vocab),
        "train_chars": len(run.data.train),
        "val_chars": len(run.data.val),
        "total_steps": run.total_steps,
        "seconds": run.cfg.seconds,
        "resumed_at_step": run.counters.step,
        "added_chars": added,
        "world_size": run.ranks.world,
        "bf16": run.bf16,
        "bf16_refused": run.bf16_refused,  # why --bf16 was asked for but float32 is used
    }


def _step_event(run: _Run, train_loss: float) -> Event:
    c = run.counters
    rate = c.chars / c.elapsed if c.elapsed else 0.0
    p = run.progress()
    eta = (c.elapsed / p - c.elapsed) if p > 0 else None
    return {
        "event": "step",
        "step": c.step,
        "epoch": round(c.chars / len(run.data.train), 3),
        "progress": round(p, 4),
        "train_loss": round(train_loss, 4),
        "lr": _lr_at(run),
        "chars_per_s": round(rate),
        "elapsed": round(c.elapsed, 1),
        "eta": round(eta, 1) if eta is not None else None,
    }


def _finish(run: _Run, added: list[str]) -> TrainResult:
    """Final evaluation of the best model, both ways, recorded in its card."""
    best = load_model(run.out, device=run.device)
    iters = run.cfg.final_eval_iters
    losses = evaluate.losses_report(
        evaluate.block_loss(best.network, run.data.val, iters=iters), evaluate.stateful_loss(best.network, run.data.val)
    )
    _rewrite_metrics(best, losses)
    c = run.counters
    result = TrainResult(
        out=str(run.out),
        steps=c.step,
        seconds=round(c.elapsed, 1),
        chars_per_s=round(c.chars / c.elapsed) if c.elapsed else 0.0,
        params=best.network.num_parameters(),
        losses=losses,
        added_chars=added,
        sample=sample_text(best.network, best.vocab, 300, seed=0),
        world_size=run.ranks.world,
    )
    run.sink({"event": "done"} | asdict(result))
    return result


def _rewrite_metrics(best: LoadedGenerator, losses: dict[str, float]) -> None:
    card = best.card.model_copy(update={"metrics": losses})
    save_model(best.path, best.network, best.vocab, card, dtype=best.card.weights.dtype)


@torch.no_grad()
def sample_text(model: CharRNN, vocab: Vocab, length: int, seed: int, temperature: float = 0.8) -> str:
    """A short sample from a newline primer, as char-rnn prints while training."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    device = model.head.weight.device
    primer = vocab.encode("\n").ids or [0]
    logits, state = model(torch.tensor([primer], device=device))  # (1, T, V)
    last = logits[:, -1]  # (1, V)
    out: list[int] = []
    for _ in range(length):
        probs = torch.softmax(last.float().cpu() / temperature, dim=-1)  # (1, V)
        nxt = torch.multinomial(probs, 1, generator=gen)  # (1, 1)
        out.append(int(nxt))
        last, state = model.step(nxt[:, 0].to(device), state)
    model.train(was_training)
    return vocab.decode(out)
