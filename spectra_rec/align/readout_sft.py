"""SFT on packed reference points: every question of a reference point shares one history-prefix pass,
and the readouts are trained on the whole target distribution.

One training row per (user, reference point)::

    [bos + history prefix] [question 1 (+ answer)] [question 2 (+ answer)] ...

Each question block attends to the prefix and to itself only (a block-diagonal 4-D attention
mask) and its position ids continue from the prefix's end, so every block sees exactly the
tokens and positions it would see alone after the prefix: the probe's prompt, token for token
(the prefix and the question are tokenized apart, as the probe does). One forward pass then
gives

- the answer-token loss of the reference point's sampled examples (``SFTConfig.examples_per_ref``,
  every format, DG lists included), as plain SFT would;
- for each readout in ``SFTConfig.readout_loss``, the readout's distribution over the K
  categories computed as the probe computes it (``logit``: softmax over c of
  logsumexp l[yes] - logsumexp l[no] after ``yes_no_question(c)``; ``name``: softmax of the
  summed log-probabilities of each name after ``name_question()``; ``choice``: softmax of the
  answer-letter logits, anchored blocks for K > 26), and its loss KL(f || p) against the
  reference point's whole future distribution f, instead of one sampled answer.

The total loss is mean answer-token NLL + ``readout_weight`` * mean over rows of the summed KL.
Plain rows (``input_ids`` + ``labels`` only) go through the same collator as causal sequences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from spectra_rec.align.train import IGNORE, ListDataset
from spectra_rec.errors import ConfigError
from spectra_rec.text import templates as T

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadoutSpec:
    """Token ids the readout losses read (shared by every row of one tokenizer and dataset)."""

    K: int
    affirmative: tuple[int, ...]
    negative: tuple[int, ...]
    letters: tuple[int, ...]
    blocks: tuple[tuple[int, ...], ...]
    names: tuple[tuple[int, ...], ...]
    """Tokens of ``answer(c)`` after ``name_question()``, per category."""
    yes_no: tuple[tuple[int, ...], ...]
    choice: tuple[tuple[int, ...], ...]
    name_question: tuple[int, ...]


def readout_spec(tokenizer, dataset) -> ReadoutSpec:
    """Tokenize the probe's questions and answer words once (the probe checks the same words are single tokens)."""
    def enc(text: str) -> tuple[int, ...]:
        return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])

    def single(context: str, word: str) -> int:
        ctx = enc(context)
        full = enc(context + T.answer(word))
        if full[: len(ctx)] != ctx or len(full) != len(ctx) + 1:
            raise ConfigError(f"readout loss: {T.answer(word)!r} is not one token after {context[-20:]!r}")
        return full[-1]

    cats = list(dataset.categories)
    yn0 = T.yes_no_question(cats[0])
    v = T.Verbalizers()
    blocks = tuple(tuple(b) for b in T.choice_blocks(len(cats)))
    choice = tuple(enc(T.choice_question([cats[k] for k in b])) for b in blocks)
    nq = T.name_question()
    names = []
    for c in cats:
        ctx, full = enc(nq), enc(nq + T.answer(c))
        if full[: len(ctx)] != ctx:
            raise ConfigError(f"readout loss: the name {c!r} merges with the end of the name question")
        names.append(full[len(ctx):])
    return ReadoutSpec(
        K=len(cats),
        affirmative=tuple(single(yn0, w) for w in v.affirmative),
        negative=tuple(single(yn0, w) for w in v.negative),
        letters=tuple(single(T.choice_question([cats[k] for k in blocks[0]]), w) for w in T.ANSWER_LETTERS),
        blocks=blocks,
        names=tuple(names),
        yes_no=tuple(enc(T.yes_no_question(c)) for c in cats),
        choice=choice,
        name_question=enc(nq),
    )


def pack_reference_points(tokenizer, spec: ReadoutSpec, points: Sequence, readouts: Sequence[str],
                          max_length: int) -> ListDataset:
    """One packed row per reference point (see the module docstring); ``readouts`` may be empty."""
    eos = tokenizer.eos_token_id
    rows = []
    prefixes = tokenizer([rp.prefix for rp in points])["input_ids"]
    for rp, prefix in zip(points, prefixes):
        P = len(prefix)
        ids, pos, seg, labels = list(prefix), list(range(P)), [0] * P, [IGNORE] * P
        reads: dict = {}

        def block(tokens, label_from: int | None = None) -> int:
            """Append a question block; returns the index of its first token in the row."""
            start = len(ids)
            s = len(set(seg))  # a fresh segment id
            ids.extend(tokens)
            pos.extend(range(P, P + len(tokens)))
            seg.extend([s] * len(tokens))
            lab = [IGNORE] * len(tokens)
            if label_from is not None:
                # position j predicts token j + 1: the answer tokens are the labels of the positions before them
                for j in range(label_from, len(tokens)):
                    lab[j - 1] = tokens[j]
            labels.extend(lab)
            return start

        for fmt, q, a in rp.questions:
            qt = tokenizer(q, add_special_tokens=False)["input_ids"]
            at = tokenizer(a, add_special_tokens=False)["input_ids"] + [eos]
            block(qt + at, label_from=len(qt))
            labels[-1] = IGNORE  # the eos predicts nothing
        if "logit" in readouts:
            reads["yn"] = [block(q) + len(q) - 1 for q in spec.yes_no]
        if "choice" in readouts:
            reads["ch"] = [block(q) + len(q) - 1 for q in spec.choice]
        if "name" in readouts:
            nq = list(spec.name_question)
            if all(len(n) == 1 for n in spec.names):
                at = block(nq) + len(nq) - 1
                reads["nm"] = [[at] for _ in spec.names]
            else:  # multi-token names: one block per name, reading each of its tokens
                reads["nm"] = []
                for n in spec.names:
                    s = block(nq + list(n[:-1]))
                    reads["nm"].append([s + len(nq) - 1 + j for j in range(len(n))])
        row = {"input_ids": ids, "labels": labels, "position_ids": pos, "segments": seg, "format": "packed"}
        if reads:
            row["reads"] = reads
            row["target"] = np.asarray(rp.target, dtype=np.float32).tolist()
        if max(pos) >= max_length:
            raise ConfigError(f"packed SFT row: position {max(pos)} exceeds max_length {max_length}")
        rows.append(row)
    return ListDataset(rows)


class PackedCollator:
    """Right-pads packed rows (and plain ``input_ids``/``labels`` rows) and builds the 4-D block mask.

    Labels come out shifted (position j predicts ``labels[j]``). The mask travels as ``block_mask``,
    not ``attention_mask``, so the Trainer's token count reads the ids, not a 4-D mask.
    """

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        B = len(rows)
        L = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((B, L), self.pad, dtype=torch.long)
        labels = torch.full((B, L), IGNORE, dtype=torch.long)
        pos = torch.zeros((B, L), dtype=torch.long)
        seg = torch.full((B, L), -1, dtype=torch.long)
        for b, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[b, :n] = torch.tensor(r["input_ids"])
            if "segments" in r:
                labels[b, :n] = torch.tensor(r["labels"])
                pos[b, :n] = torch.tensor(r["position_ids"])
                seg[b, :n] = torch.tensor(r["segments"])
            else:  # a plain row: HF labels (the token itself), shifted to "position j predicts labels[j]"
                labels[b, : n - 1] = torch.tensor(r["labels"][1:])
                labels[b, n - 1] = IGNORE
                pos[b, :n] = torch.arange(n)
                seg[b, :n] = 0
            pos[b, n:] = torch.arange(L - n) + (int(pos[b, n - 1]) + 1 if n else 0)
        causal = torch.ones((L, L), dtype=torch.bool).tril()
        q, k = seg[:, :, None], seg[:, None, :]
        mask = causal & (k >= 0) & ((k == 0) | (q == k))
        mask |= torch.eye(L, dtype=torch.bool)  # pad queries attend to themselves (no empty softmax row)
        batch = {"input_ids": ids, "labels": labels, "position_ids": pos, "block_mask": mask[:, None]}
        if any("reads" in r for r in rows):
            batch["reads"] = [r.get("reads") for r in rows]
            batch["target"] = [r.get("target") for r in rows]
        return batch


def readout_logprobs(logp_at, spec: ReadoutSpec, reads: dict):
    """{readout: (K,) log p_readout} for one row; ``logp_at(positions) -> (n, V)`` log-softmaxed logits."""
    import torch

    out = {}
    if "yn" in reads:
        lp = logp_at(reads["yn"])
        s = torch.logsumexp(lp[:, list(spec.affirmative)], -1) - torch.logsumexp(lp[:, list(spec.negative)], -1)
        out["logit"] = torch.log_softmax(s, -1)
    if "ch" in reads:
        lp = logp_at(reads["ch"])
        s = lp.new_zeros(spec.K)
        anchored = len(spec.blocks) > 1
        for b, blk in enumerate(spec.blocks):
            row = lp[b, list(spec.letters[: len(blk)])]
            s = s.index_copy(0, torch.tensor(blk), row - row[0] if anchored else row)
        out["choice"] = torch.log_softmax(s, -1)
    if "nm" in reads:
        flat = [p for ps in reads["nm"] for p in ps]
        lp = logp_at(flat)
        toks = torch.tensor([t for n in spec.names for t in n])
        per = lp[torch.arange(len(flat)), toks]
        owner = torch.tensor([c for c, n in enumerate(spec.names) for _ in n])
        s = per.new_zeros(spec.K).index_add(0, owner, per)
        out["name"] = torch.log_softmax(s, -1)
    return out


def packed_loss(model, batch: dict, spec: ReadoutSpec | None, readout_weight: float):
    """(total loss, {component: value}) of one collated batch."""
    import torch

    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["block_mask"],
                     position_ids=batch["position_ids"], use_cache=False).last_hidden_state
    labels = batch["labels"]
    keep = labels != IGNORE
    parts = {}
    total = hidden.new_zeros(())
    if keep.any():
        logits = head(hidden[keep]).float()
        lm = torch.nn.functional.cross_entropy(logits, labels[keep])
        parts["answer"] = lm
        total = total + lm
    reads = batch.get("reads")
    if reads and spec is not None and readout_weight > 0:
        kls = []
        for b, (r, f) in enumerate(zip(reads, batch["target"])):
            if not r:
                continue
            f = torch.tensor(f, dtype=torch.float32)
            logf = torch.log(f.clamp_min(1e-12))

            def logp_at(positions, b=b):
                return torch.log_softmax(head(hidden[b, list(positions)]).float(), -1)

            for name, lp in readout_logprobs(logp_at, spec, r).items():
                kl = (f * (logf - lp)).sum()
                kls.append(kl)
                parts.setdefault(f"kl_{name}", []).append(kl.detach())
        if kls:
            total = total + readout_weight * torch.stack(kls).sum() / len(reads)
    parts = {k: (torch.stack(v).mean() if isinstance(v, list) else v.detach()) for k, v in parts.items()}
    return total, parts


def trainer_class(spec: ReadoutSpec | None, readout_weight: float, base=None):
    """A subclass of ``base`` (default ``transformers.Trainer``) whose loss is :func:`packed_loss`."""
    if base is None:
        from transformers import Trainer as base

    class PackedTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            inputs.pop("format", None)
            loss, _ = packed_loss(model, inputs, spec, readout_weight)
            return (loss, {}) if return_outputs else loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            import torch

            with torch.no_grad():
                loss, _ = packed_loss(model, dict(inputs), spec, readout_weight)
            return loss.detach(), None, None

        def _prepare_inputs(self, inputs):
            # reads / targets are python lists: move only the tensors
            return {k: (v.to(self.args.device) if hasattr(v, "to") else v) for k, v in inputs.items()}

    return PackedTrainer
