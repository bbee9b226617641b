"""SFT on packed reference points: every question of a reference point shares one history-prefix pass,
and the readouts are trained on the whole target distribution.

One training row per (user, reference point)::

    [bos + history prefix] [question 1 (+ answer)] [question 2 (+ answer)] ...

Each question block attends to the prefix and to itself only (a 4-D attention mask over a tree
of segments) and its position ids continue from the prefix's end, so every block sees exactly
the tokens and positions it would see alone after the prefix: the probe's prompt, token for
token (the prefix and the question are tokenized apart, as the probe does). Two shares make
rows cheaper without changing what any question sees:

- the K yes/no questions differ only in their ends, so their common first tokens are one stem
  segment and each category's tail attends to the prefix, the stem and itself; the name
  question is one segment, and each multi-token name's later tokens hang under it;
- several reference points of one user can share a row (``SFTConfig.refs_per_row``): the
  prefix is cut at each point's last history token, and that point's questions attend to the
  prefix up to the cut only.

The attention itself runs block by block (:func:`attention_blocks`): the shared prefix on SDPA's
causal path, then each reference point's questions against the prefix up to its cut and
themselves, the i-th block of every row in one padded SDPA call. That is the dense
tree-masked attention (tested) at about half of its query x key products.

One forward pass then gives

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
    history_question: tuple[int, ...] = ()
    """Tokens of ``templates.history_question()`` (the auxiliary history loss, read as the name readout)."""

    @property
    def yes_no_stem(self) -> int:
        """Leading tokens every yes/no question shares (the K questions differ only after them)."""
        first, n = self.yes_no[0], 0
        while n < len(first) - 1 and all(len(q) > n + 1 and q[n] == first[n] for q in self.yes_no):
            n += 1
        return n


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
        history_question=enc(T.history_question()),
    )


def group_rows(points: Sequence) -> list[list]:
    """Reference points grouped into rows: consecutive points of one user with the same ``row`` (>= 0)."""
    rows: list[list] = []
    for rp in points:
        key = (rp.user, rp.row)
        if rows and rp.row >= 0 and (rows[-1][-1].user, rows[-1][-1].row) == key:
            rows[-1].append(rp)
        else:
            rows.append([rp])
    return rows


class _Row:
    """One packed row under construction: tokens, positions, labels and the segment tree."""

    def __init__(self):
        self.ids: list[int] = []
        self.pos: list[int] = []
        self.seg: list[int] = []
        self.labels: list[int] = []
        self.parents: list[int] = []

    def segment(self, tokens, parent: int, start_pos: int, label_from: int | None = None) -> tuple[int, int]:
        """Append a segment that attends to ``parent``'s chain; returns (its id, the row index of its first token)."""
        s, start = len(self.parents), len(self.ids)
        self.parents.append(parent)
        self.ids.extend(tokens)
        self.pos.extend(range(start_pos, start_pos + len(tokens)))
        self.seg.extend([s] * len(tokens))
        lab = [IGNORE] * len(tokens)
        if label_from is not None:
            # position j predicts token j + 1: the answer tokens are the labels of the positions before them
            for j in range(label_from, len(tokens)):
                lab[j - 1] = tokens[j]
        self.labels.extend(lab)
        return s, start


def _name_reads(row: _Row, spec: ReadoutSpec, question: Sequence[int], parent: int, P: int) -> list[list[int]]:
    """Append a name-style question; per category, the positions that read its name's tokens.

    A name's first token is read after the question; a multi-token name's later tokens after its
    own earlier ones, in a segment under the question.
    """
    q = list(question)
    s_q, first = row.segment(q, parent, P)
    reads = []
    for n in spec.names:
        tail = row.segment(list(n[:-1]), s_q, P + len(q))[1] if len(n) > 1 else None
        reads.append([first + len(q) - 1] + [tail + j for j in range(len(n) - 1)])
    return reads


def pack_reference_points(tokenizer, spec: ReadoutSpec, points: Sequence, readouts: Sequence[str],
                          max_length: int, history: bool = False) -> ListDataset:
    """One packed row per row of reference points (see the module docstring); ``readouts`` may be empty.

    ``history``: also ask ``templates.history_question()`` after each point's prefix (the auxiliary
    history loss; its target is the point's ``history``).
    """
    eos = tokenizer.eos_token_id
    stem = spec.yes_no_stem
    out = []
    groups = group_rows(points)
    encoded = tokenizer([g[-1].prefix for g in groups])["input_ids"]
    for group, prefix in zip(groups, encoded):
        row = _Row()
        # the prefix, cut after each point's history: segment j holds the tokens between cut j-1 and cut j
        earlier = tokenizer([rp.prefix for rp in group[:-1]])["input_ids"] if len(group) > 1 else []
        for rp, tokens in zip(group, earlier):
            if list(tokens) != list(prefix[: len(tokens)]):
                raise ConfigError(f"packed SFT row: the prefix of reference point {rp.ref} of user {rp.user} "
                                  "does not tokenize as the start of its row's prefix")
        cuts = [len(t) for t in earlier] + [len(prefix)]
        cut_segs, at = [], 0
        for n in cuts:
            cut_segs.append(row.segment(prefix[at:n], cut_segs[-1] if cut_segs else -1, at)[0])
            at = n
        refs = []
        for rp, P, parent in zip(group, cuts, cut_segs):
            reads: dict = {}
            for fmt, q, a in rp.questions:
                qt = tokenizer(q, add_special_tokens=False)["input_ids"]
                at_ = tokenizer(a, add_special_tokens=False)["input_ids"] + [eos]
                row.segment(qt + at_, parent, P, label_from=len(qt))
                row.labels[-1] = IGNORE  # the eos predicts nothing
            if "logit" in readouts:  # the stem segment may be empty: then each question hangs under the prefix
                s_stem, _ = row.segment(list(spec.yes_no[0][:stem]), parent, P)
                reads["yn"] = [row.segment(q[stem:], s_stem, P + stem)[1] + len(q) - stem - 1 for q in spec.yes_no]
            if "choice" in readouts:
                reads["ch"] = [row.segment(q, parent, P)[1] + len(q) - 1 for q in spec.choice]
            if "name" in readouts:
                reads["nm"] = _name_reads(row, spec, spec.name_question, parent, P)
            extra = {}
            if history and rp.history is not None:
                reads["hs"] = _name_reads(row, spec, spec.history_question, parent, P)
                extra["history"] = np.asarray(rp.history, dtype=np.float32).tolist()
            if reads:
                refs.append({"reads": reads, "target": np.asarray(rp.target, dtype=np.float32).tolist(), **extra})
        packed = {"input_ids": row.ids, "labels": row.labels, "position_ids": row.pos, "segments": row.seg,
                  "parents": row.parents, "format": "packed"}
        if refs:
            packed["refs"] = refs
        if max(row.pos) >= max_length:
            raise ConfigError(f"packed SFT row: position {max(row.pos)} exceeds max_length {max_length}")
        out.append(packed)
    return ListDataset(out)


def visible(row: dict, index: int) -> tuple[list[int], list[int]]:
    """(tokens, position ids) that row position ``index`` attends to, in order: what the model sees there."""
    parents, seg = row["parents"], row["segments"]
    chain, s = set(), seg[index]
    while s >= 0:
        chain.add(s)
        s = parents[s]
    keep = [j for j in range(index + 1) if seg[j] in chain]
    return [row["input_ids"][j] for j in keep], [row["position_ids"][j] for j in keep]


def attention_blocks(parents: Sequence[int], segments: Sequence[int]) -> tuple[int, list[tuple[int, int, int]]]:
    """A row's attention as dense blocks: (P, [(start, end, key_end), ...]).

    Tokens [0, P) are the trunk, the leading tokens in a chain of segments from the root, where
    the mask is plain causal. Every later token belongs to one block, a maximal run of tokens
    under the same trunk segment: its keys are the trunk up to ``key_end`` (that segment's end,
    all of it an ancestor) and the block itself, where the tree mask decides. Attention computed
    block by block equals the dense tree-masked attention without the products between blocks.
    """
    n = len(segments)
    trunk = 0  # segments 0 .. trunk-1 chain from the root (each one's parent is the one before)
    while trunk < len(parents) and parents[trunk] == trunk - 1:
        trunk += 1
    P = 0
    while P < n and segments[P] < trunk:
        P += 1
    dense = 0, [(0, n, 0)]  # the fallback: one block, the whole row under the tree mask
    if any(s < trunk for s in segments[P:]) or any(a > b for a, b in zip(segments[:P], segments[1:P])):
        return dense  # the trunk's tokens are not a leading run in chain order
    end_of = {segments[j]: j + 1 for j in range(P)}
    blocks, top_of, block_of = [], {}, {}
    for j in range(P, n):
        s = segments[j]
        if s not in top_of:
            t = s
            while t >= trunk:
                t = parents[t]
            top_of[s] = end_of.get(t, 0)
        if blocks and blocks[-1][1] == j and blocks[-1][2] == top_of[s]:
            blocks[-1] = (blocks[-1][0], j + 1, top_of[s])
        else:
            blocks.append((j, j + 1, top_of[s]))
        if s in block_of:
            if block_of[s] != len(blocks) - 1:
                return dense  # a segment's tokens split over two blocks
            continue
        block_of[s] = len(blocks) - 1
        t = parents[s]
        while t >= trunk:
            if block_of.get(t) != block_of[s]:
                return dense  # an ancestor outside this block: its keys would be missing
            t = parents[t]
    return P, blocks


def block_groups(row_blocks: Sequence[tuple[int, Sequence[tuple[int, int, int]]]], segments, ancestors) -> list:
    """Index tensors that put the trunks of all rows into one causal SDPA call, and the i-th blocks into one each.

    ``segments`` (B, L) and ``ancestors`` (B, S+1, S+1) are the collator's. Returns
    [(rows, q, k, mask, valid)]: row ids (n, 1), query positions (n, Tq), key positions (n, Tk),
    the boolean mask (n, 1, Tq, Tk), or None for the trunks (causal), and which query slots are real.
    Padding slots repeat a row's last position; a padding query attends to key 0 only.
    """
    import torch

    def group(rows, qs, ks, causal):
        Tq, Tk = max(map(len, qs)), max(map(len, ks))
        q = torch.tensor([x + [x[-1]] * (Tq - len(x)) for x in qs])
        k = torch.tensor([x + [x[-1]] * (Tk - len(x)) for x in ks])
        qv = torch.tensor([[True] * len(x) + [False] * (Tq - len(x)) for x in qs])
        b = torch.tensor(rows)[:, None]
        if causal:
            return b, q, k, None, qv
        kv = torch.tensor([[True] * len(x) + [False] * (Tk - len(x)) for x in ks])
        sq, sk = segments[b, q], segments[b, k]  # (n, Tq), (n, Tk)
        m = ancestors[b[:, :, None], sq[:, :, None], sk[:, None, :]] & (k[:, None, :] <= q[:, :, None])
        m &= qv[:, :, None] & kv[:, None, :]
        m[:, :, 0] |= ~qv
        return b, q, k, m[:, None], qv

    groups = []
    trunks = [b for b, (P, _) in enumerate(row_blocks) if P > 0]
    if trunks:
        qs = [list(range(row_blocks[b][0])) for b in trunks]
        groups.append(group(trunks, qs, qs, causal=True))
    for i in range(max(len(blocks) for _, blocks in row_blocks)):
        rows = [b for b, (_, blocks) in enumerate(row_blocks) if i < len(blocks)]
        if rows:
            qs = [list(range(*row_blocks[b][1][i][:2])) for b in rows]
            ks = [list(range(row_blocks[b][1][i][2])) + q for b, q in zip(rows, qs)]
            groups.append(group(rows, qs, ks, causal=False))
    return groups


def dense_mask(batch: dict):
    """The 4-D boolean segment-tree mask (B, 1, L, L) of a collated batch: q sees k <= q when k's segment is q's or an ancestor.

    Pad queries see themselves only (no empty softmax row).
    """
    import torch

    seg, anc = batch["segments"], batch["ancestors"]
    B, L = seg.shape
    causal = torch.ones((L, L), dtype=torch.bool, device=seg.device).tril()
    mask = causal & anc[torch.arange(B, device=seg.device)[:, None, None], seg[:, :, None], seg[:, None, :]]
    mask |= torch.eye(L, dtype=torch.bool, device=seg.device)
    return mask[:, None]


TREE_ATTENTION = "spectra_tree"
"""The attention implementation packed SFT rows run under (registered with transformers on first use)."""


def _tree_attention(module, query, key, value, attention_mask, tree_groups=None, **kwargs):
    """transformers attention interface: one SDPA call per group of :func:`block_groups`; plain SDPA without groups."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward as sdpa

    if tree_groups is None:
        return sdpa(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    B, _, L, _ = query.shape
    rows, cols, vals = [], [], []
    for b, q, k, m, qv in tree_groups:  # on the model's device (batch_to)
        out = sdpa(module, query[b, :, q].transpose(1, 2), key[b, :, k].transpose(1, 2),
                   value[b, :, k].transpose(1, 2), m, is_causal=m is None, **kwargs)[0]  # (n, Tq, H, D)
        rows.append(b.expand_as(q)[qv])
        cols.append(q[qv])
        vals.append(out[qv])
    rows, cols, vals = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    full = vals.new_zeros((B, L) + vals.shape[1:])
    return full.index_put((rows, cols), vals), None


class _tree_attention_on:
    """Run a model's attention as :func:`_tree_attention` inside the block (restored on exit)."""

    def __init__(self, model):
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        if TREE_ATTENTION not in AttentionInterface._global_mapping:
            AttentionInterface.register(TREE_ATTENTION, _tree_attention)
            # mask preparation gives an attention name it has no mask function for no mask at all
            # (decoder_states skips it; a model that prepares masks regardless gets SDPA's)
            ALL_MASK_ATTENTION_FUNCTIONS.register(TREE_ATTENTION, sdpa_mask)
        self.config = model.config

    def __enter__(self):
        self.old = self.config._attn_implementation
        usable = self.old in (None, "sdpa")  # eager or flash kernels keep their own attention
        if usable:
            self.config._attn_implementation = TREE_ATTENTION
        return usable

    def __exit__(self, *exc):
        self.config._attn_implementation = self.old


def decoder_states(model, batch: dict):
    """Last hidden states of a collated batch under its segment-tree mask (block by block where SDPA runs)."""
    decoder = model.get_decoder()
    with _tree_attention_on(model) as tree:
        if tree:
            # a mask mapping skips transformers' mask preparation: the groups carry the masks
            return decoder(input_ids=batch["input_ids"], attention_mask={"full_attention": None, "sliding_attention": None},
                           position_ids=batch["position_ids"], use_cache=False,
                           tree_groups=batch["tree_groups"]).last_hidden_state
    return decoder(input_ids=batch["input_ids"], attention_mask=dense_mask(batch), position_ids=batch["position_ids"],
                   use_cache=False).last_hidden_state


def batch_to(batch: dict, device) -> dict:
    """A collated batch with its tensors, the attention groups' included, on ``device`` (python lists stay)."""
    out = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
    if "tree_groups" in out:
        out["tree_groups"] = [tuple(t if t is None else t.to(device) for t in g) for g in out["tree_groups"]]
    return out


class PackedCollator:
    """Right-pads packed rows (and plain ``input_ids``/``labels`` rows) and describes their segment trees.

    Position q attends to position k <= q when k's segment is q's or one of its ancestors: the
    batch carries ``segments`` (B, L), ``ancestors`` (B, S+1, S+1) and the attention blocks'
    ``tree_groups``; :func:`dense_mask` builds the 4-D mask from the first two when an attention
    implementation needs it. Labels come out shifted (position j predicts ``labels[j]``).
    """

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        B = len(rows)
        L = max(len(r["input_ids"]) for r in rows)
        S = max(len(r.get("parents", [-1])) for r in rows)
        ids = torch.full((B, L), self.pad, dtype=torch.long)
        labels = torch.full((B, L), IGNORE, dtype=torch.long)
        pos = torch.zeros((B, L), dtype=torch.long)
        seg = torch.full((B, L), S, dtype=torch.long)  # pads: segment S, which nothing sees
        anc = [[[False] * (S + 1) for _ in range(S + 1)] for _ in range(B)]  # anc[b][s][t]: t is s or an ancestor of s
        for b, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[b, :n] = torch.tensor(r["input_ids"])
            if "segments" in r:
                labels[b, :n] = torch.tensor(r["labels"])
                pos[b, :n] = torch.tensor(r["position_ids"])
                seg[b, :n] = torch.tensor(r["segments"])
                parents = r["parents"]
            else:  # a plain row: HF labels (the token itself), shifted to "position j predicts labels[j]"
                labels[b, : n - 1] = torch.tensor(r["labels"][1:])
                labels[b, n - 1] = IGNORE
                pos[b, :n] = torch.arange(n)
                seg[b, :n] = 0
                parents = [-1]
            for s in range(len(parents)):
                t = s
                while t >= 0:
                    anc[b][s][t] = True
                    t = parents[t]
            pos[b, n:] = torch.arange(L - n) + (int(pos[b, n - 1]) + 1 if n else 0)
        anc = torch.tensor(anc, dtype=torch.bool)
        blocks = [attention_blocks(r.get("parents", [-1]), r.get("segments", [0] * len(r["input_ids"]))) for r in rows]
        batch = {"input_ids": ids, "labels": labels, "position_ids": pos, "segments": seg, "ancestors": anc,
                 "tree_groups": block_groups(blocks, seg, anc)}
        if any("refs" in r for r in rows):
            batch["refs"] = [r.get("refs", []) for r in rows]
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
    for key, name in (("nm", "name"), ("hs", "history")):
        if key in reads:
            flat = [p for ps in reads[key] for p in ps]
            lp = logp_at(flat)
            toks = torch.tensor([t for n in spec.names for t in n])
            per = lp[torch.arange(len(flat)), toks]
            owner = torch.tensor([c for c, n in enumerate(spec.names) for _ in n])
            s = per.new_zeros(spec.K).index_add(0, owner, per)
            out[name] = torch.log_softmax(s, -1)
    return out


def packed_loss(model, batch: dict, spec: ReadoutSpec | None, readout_weight: float, history_weight: float = 0.0):
    """(total loss, {component: value}) of one collated batch."""
    import torch

    head = model.get_output_embeddings()
    hidden = decoder_states(model, batch)
    labels = batch["labels"]
    keep = labels != IGNORE
    parts = {}
    total = hidden.new_zeros(())
    if keep.any():
        logits = head(hidden[keep]).float()
        lm = torch.nn.functional.cross_entropy(logits, labels[keep])
        parts["answer"] = lm
        total = total + lm
    rows = batch.get("refs")
    if rows and spec is not None and (readout_weight > 0 or history_weight > 0):
        # One head and one log-softmax over every position any reference point of the batch reads
        # (a few hundred), instead of one small head call per point and readout.
        L = hidden.shape[1]
        flat = sorted({b * L + j for b, refs in enumerate(rows) for ref in refs
                       for ps in ref["reads"].values() for p in ps for j in (p if isinstance(p, list) else [p])})
        at = {f: i for i, f in enumerate(flat)}
        logp = torch.log_softmax(head(hidden.reshape(-1, hidden.shape[-1])[flat]).float(), -1)
        kls, n_refs = [], 0
        for b, refs in enumerate(rows):
            for ref in refs:
                n_refs += 1
                targets = {key: torch.tensor(ref[key], dtype=torch.float32) for key in ("target", "history") if key in ref}

                def logp_at(positions, b=b):
                    return logp[[at[b * L + j] for j in positions]]

                for name, lp in readout_logprobs(logp_at, spec, ref["reads"]).items():
                    f = targets["history" if name == "history" else "target"]
                    kl = (f * (torch.log(f.clamp_min(1e-12)) - lp)).sum()
                    kls.append((history_weight if name == "history" else readout_weight) * kl)
                    parts.setdefault(f"kl_{name}", []).append(kl.detach())
        if kls:
            # mean over reference points, so rows that share a prefix weigh each point as a row of its own would
            total = total + torch.stack(kls).sum() / n_refs
    parts = {k: (torch.stack(v).mean() if isinstance(v, list) else v.detach()) for k, v in parts.items()}
    return total, parts


def trainer_class(spec: ReadoutSpec | None, readout_weight: float, base=None, history_weight: float = 0.0):
    """A subclass of ``base`` (default ``transformers.Trainer``) whose loss is :func:`packed_loss`."""
    if base is None:
        from transformers import Trainer as base

    class PackedTrainer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # packed_loss is a mean over one micro-batch and ignores num_items_in_batch. The Trainer
            # sees a model whose forward takes **kwargs and would take the loss as already scaled for
            # gradient accumulation (and multiply it by the number of processes): with grad_accum 2
            # the gradient and the logged loss came out twice the mean.
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            inputs.pop("format", None)
            loss, _ = packed_loss(model, inputs, spec, readout_weight, history_weight)
            return (loss, {}) if return_outputs else loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            import torch

            with torch.no_grad():
                loss, _ = packed_loss(model, dict(inputs), spec, readout_weight, history_weight)
            return loss.detach(), None, None

        def _prepare_inputs(self, inputs):
            # the reference points' reads and targets are python lists: move only the tensors
            return batch_to(inputs, self.args.device)

    return PackedTrainer
