"""CPT and SFT through the Hugging Face Trainer (so accelerate / torchrun run them unchanged).

- CPT: documents encoded as ``<|bos|> text <|eos|>``, concatenated and cut into blocks of
  ``max_length`` tokens; loss on every token.
- SFT: ``tokenizer(prompt)`` (the tokenizer's own special tokens, exactly as a probe encodes
  it) + ``completion`` tokens + eos; labels are -100 on the prompt, so the loss covers the
  answer tokens only. Padding is masked by position, never by token id (pad may equal eos in
  a base model's tokenizer).

AdamW, cosine schedule with linear warmup, gradient clipping, seeded data order, checkpoints
every ``save_steps`` into a work folder and resume from the last one.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from spectra_rec.align.config import TrainConfig

log = logging.getLogger(__name__)

IGNORE = -100


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


class ListDataset:
    """A list of feature dicts as a map-style torch dataset."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    @property
    def n_tokens(self) -> int:
        return int(sum(len(r["input_ids"]) for r in self.rows))

    @property
    def n_label_tokens(self) -> int:
        return int(sum(sum(1 for x in r["labels"] if x != IGNORE) for r in self.rows))


def pack_documents(tokenizer, docs: Sequence[str], block_size: int) -> ListDataset:
    """CPT blocks: ``bos + doc + eos`` for each doc, concatenated, cut into ``block_size`` tokens.

    The last partial block is kept when it holds at least a quarter of a block.
    """
    enc = tokenizer(list(docs), add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id]
    stream: list[int] = []
    for ids in enc:
        stream.extend(bos + ids + eos)
    rows = []
    for s in range(0, len(stream), block_size):
        block = stream[s : s + block_size]
        if len(block) < block_size // 4 and rows:
            break
        rows.append({"input_ids": block, "labels": list(block)})
    return ListDataset(rows)


def encode_examples(tokenizer, examples, max_length: int) -> ListDataset:
    """SFT rows; an over-long prompt is cut from the left (callers fit the context first, so this is rare)."""
    prompts = tokenizer([e.prompt for e in examples])["input_ids"]
    answers = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    rows, cut = [], 0
    for e, p, a in zip(examples, prompts, answers):
        a = a + [eos]
        room = max_length - len(a)
        if len(p) > room:
            cut += 1
            p = p[len(p) - room :]
        rows.append({"input_ids": p + a, "labels": [IGNORE] * len(p) + a, "format": e.format})
    if cut:
        log.warning("%d of %d SFT prompts were cut from the left to fit max_length=%d", cut, len(rows), max_length)
    return ListDataset(rows)


class Collator:
    """Right-pad ``input_ids`` with pad_token_id and ``labels`` with -100; no attention mask.

    With right padding a causal model never lets a real token attend to a later pad, so the
    logits and loss of every real token equal the unpadded ones (tested); leaving the mask out
    keeps SDPA on its fast causal path. Labels are masked by position, never by token id.
    """

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), self.pad, dtype=torch.long)
        labels = torch.full((len(rows), n), IGNORE, dtype=torch.long)
        for j, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[j, :k] = torch.tensor(r["input_ids"])
            labels[j, :k] = torch.tensor(r["labels"])
        return {"input_ids": ids, "labels": labels}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def resolve_bf16(bf16: bool | None) -> bool:
    """None: bf16 autocast on a CUDA GPU that supports it, and on a CPU that computes bf16 natively."""
    import torch

    if bf16 is None:
        if torch.cuda.is_available():
            return bool(torch.cuda.is_bf16_supported())
        from spectra_rec.align.model import native_cpu_bf16

        return native_cpu_bf16()
    return bool(bf16)


def training_arguments(cfg: TrainConfig, output_dir: Path, seed: int, n_train: int, group_by_length: bool,
                       has_eval: bool, bf16: bool | None = None, gradient_checkpointing: bool = False):
    """``TrainingArguments`` for one phase (cosine with warmup, AdamW, seeded, checkpointing)."""
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    bf16 = resolve_bf16(bf16)
    steps_per_epoch = max(1, math.ceil(n_train / (cfg.batch_size * cfg.grad_accum)))
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=total,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim="adamw_torch",
        adam_beta1=0.9,
        adam_beta2=0.95,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,
        eval_strategy="no",
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=False,
        save_only_model=False,
        gradient_checkpointing=gradient_checkpointing,
        # non-reentrant checkpointing works with frozen inputs (LoRA) without enable_input_require_grads
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        ddp_find_unused_parameters=False,
    )


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest *complete* ``checkpoint-N`` folder; incomplete ones (a kill during a save) are removed.

    The Trainer writes ``trainer_state.json`` last, after the weights, optimizer, scheduler and
    RNG states, and not atomically: a checkpoint counts as complete when that file parses and
    names step N. Taking the highest-numbered folder regardless made every rerun after such a
    kill crash until the work folder was thrown away.
    """
    import json
    import shutil

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = []
    for d in output_dir.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if m and d.is_dir():
            found.append((int(m.group(1)), d))
    for step, d in sorted(found, reverse=True):
        try:
            state = json.loads((d / "trainer_state.json").read_text())
            if int(state.get("global_step", -1)) == step:
                return str(d)
        except (OSError, ValueError):
            pass
        log.warning("removing incomplete checkpoint %s (interrupted while saving)", d)
        shutil.rmtree(d, ignore_errors=True)
    return None


def _step_of(checkpoint: str) -> int:
    """The global step a complete checkpoint was saved at (see :func:`last_checkpoint`)."""
    return int(re.fullmatch(r"checkpoint-(\d+)", Path(checkpoint).name).group(1))


def _tokens_at(checkpoint: str | None) -> int:
    """Input tokens already seen when ``checkpoint`` was saved (0 for a fresh start)."""
    import json

    if checkpoint is None:
        return 0
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return int(state.get("num_input_tokens_seen") or 0)


def train(model, tokenizer, train_set: ListDataset, eval_sets: dict[str, ListDataset], cfg: TrainConfig,
          work_dir: Path, seed: int, group_by_length: bool = False, callbacks=None, bf16: bool | None = None,
          gradient_checkpointing: bool = False, collator=None, trainer_class=None) -> dict:
    """Train ``model`` in place with the HF Trainer; returns the training-curve summary.

    ``collator`` replaces :class:`Collator`; ``trainer_class(base)`` returns a subclass of ``base``,
    the Trainer this function would use (packed SFT rows, :mod:`spectra_rec.align.readout_sft`).

    Validation losses are measured before and after training on each of ``eval_sets``.
    Resumes from the last checkpoint under ``work_dir/checkpoints`` when there is one.
    """
    ckpt_dir = Path(work_dir) / "checkpoints"
    args = training_arguments(cfg, ckpt_dir, seed, len(train_set), group_by_length, bool(eval_sets), bf16,
                              gradient_checkpointing)
    base = _trainer_class()
    trainer = (trainer_class(base) if trainer_class else base)(
        model=model,
        args=args,
        data_collator=collator or Collator(tokenizer.pad_token_id),
        train_dataset=train_set,
        processing_class=tokenizer,  # counts non-pad tokens seen (batches carry no attention mask)
        callbacks=callbacks,
    )
    resume = last_checkpoint(ckpt_dir)
    # The losses before training are measured once, on the fresh model, and kept in the work
    # folder: a resumed run reports them instead of an empty dict.
    before_file = Path(work_dir) / "eval_loss_before.json"
    before = _read_json(before_file) if resume else None
    if before is None:
        if resume:
            log.warning("%s: no recorded eval_loss_before for this resumed run", before_file)
            before = {}
        else:
            before = _evaluate(trainer, eval_sets)
            from spectra_rec import artifacts

            artifacts.write_json(before_file, before)
    tokens_before = _tokens_at(resume)
    if resume:
        log.info("resuming from %s", resume)
    t0 = time.perf_counter()
    if resume and _step_of(resume) >= args.max_steps:
        # Killed after its last checkpoint: the checkpoint is the result. Resuming there mid-epoch,
        # the HF Trainer would train one step past max_steps.
        from transformers import TrainerState

        trainer._load_from_checkpoint(resume)  # the Trainer's own resume loader (full or peft weights)
        trainer.state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
        logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        training_loss = float(np.mean(logged)) if logged else float("nan")
    else:
        training_loss = trainer.train(resume_from_checkpoint=resume).training_loss
    seconds = time.perf_counter() - t0
    after = _evaluate(trainer, eval_sets)
    # Mixed precision wraps the model's forward in autocast; the trained model goes on in fp32 (as it loads from disk)
    from accelerate.utils import extract_model_from_parallel

    extract_model_from_parallel(model, keep_fp32_wrapper=False)
    curve = [
        {"step": h["step"], "loss": round(float(h["loss"]), 5), "lr": float(h.get("learning_rate", float("nan")))}
        for h in trainer.state.log_history
        if "loss" in h
    ]
    losses = [c["loss"] for c in curve]
    tokens = int(trainer.state.num_input_tokens_seen)
    tokens_this_run = tokens - tokens_before  # a resumed run's clock covers only its own steps
    summary = {
        "steps": int(trainer.state.global_step),
        "epochs": round(float(trainer.state.epoch or 0.0), 4),
        "resumed_from": Path(resume).name if resume else None,
        "train_examples": len(train_set),
        "train_tokens_per_epoch": train_set.n_tokens,
        "tokens_seen": tokens,
        "seconds": round(seconds, 2),
        "tokens_this_run": tokens_this_run,
        "tokens_per_second": round(tokens_this_run / seconds, 1) if seconds > 0 else None,
        "train_loss_mean": round(float(training_loss), 5),
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_last10_mean": round(float(np.mean(losses[-10:])), 5) if losses else None,
        "eval_loss_before": before,
        "eval_loss_after": after,
        "world_size": int(args.world_size),
        "bf16": bool(args.bf16),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "curve": curve,
    }
    log.info(
        "trained %d steps in %.1fs (%.0f tokens/s); train loss %s -> %s; eval %s -> %s",
        summary["steps"], seconds, summary["tokens_per_second"] or 0, summary["train_loss_first"],
        summary["train_loss_last"], before, after,
    )
    return summary


def _trainer_class():
    """The HF Trainer, with a length-grouped train order that a resumed run reproduces.

    transformers builds its train ``LengthGroupedSampler`` without a generator, so the order is
    drawn from the global RNG when the epoch starts; a resumed run restores the RNG of the
    checkpoint first and so draws a different order, then skips the first batches of *that*
    order: some examples are seen twice, others not at all. Here the order is a function of
    (data_seed, epoch) only.
    """
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        """Batches of similar length, shuffled by a generator seeded with (seed, epoch)."""

        def __init__(self, base: LengthGroupedSampler, seed: int):
            super().__init__(base.batch_size, lengths=base.lengths)
            self.seed, self.epoch = int(seed), 0

        def set_epoch(self, epoch: int) -> None:  # the Trainer calls this before each epoch
            self.epoch = int(epoch)

        def __iter__(self):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=g))

    class SeededOrderTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                sampler = EpochSeededLengthGroupedSampler(sampler, seed)
            return sampler

    return SeededOrderTrainer


def _read_json(path: Path):
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _evaluate(trainer, eval_sets: dict[str, ListDataset]) -> dict:
    out = {}
    for name, ds in eval_sets.items():
        if len(ds) == 0:
            continue
        m = trainer.evaluate(eval_dataset=ds, metric_key_prefix=f"eval_{name}")
        out[name] = round(float(m[f"eval_{name}_loss"]), 5)
    return out


def answer_nll(model, tokenizer, rows: ListDataset, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (sum of -log p over its label tokens, number of label tokens). No Trainer; for tests/benchmarks."""
    import torch

    collate = Collator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    sums, counts = [], []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows.rows[s : s + batch_size]).items()}
            logits = model(input_ids=batch["input_ids"]).logits.float()
            labels = batch["labels"][:, 1:]
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            keep = labels != IGNORE
            nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
            sums.extend(nll.sum(dim=1).tolist())
            counts.extend(keep.sum(dim=1).tolist())
    return np.asarray(sums), np.asarray(counts)


def mean_answer_loss(model, tokenizer, rows: ListDataset, batch_size: int = 16) -> float:
    """Token-weighted mean cross-entropy over the label tokens of ``rows`` (what the Trainer's eval loss averages)."""
    sums, counts = answer_nll(model, tokenizer, rows, batch_size)
    return float(sums.sum() / max(counts.sum(), 1))
