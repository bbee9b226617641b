"""transformers backend: batched scoring with shared-prefix KV-cache reuse (CPU or GPU).

With ``reuse_prefix=True`` (the default) a prompt group's prefix is prefilled once with
batch size 1; for each batch of suffixes the cache is deep-copied, repeated B times with
``batch_repeat_interleave`` and the right-padded suffixes are fed with
``attention_mask = cat(ones(B, P), suffix_mask)``; each row's logits are read at its last
real token (docs/pitfalls.md: right padding keeps Qwen3's implicit positions correct; a forward
pass extends a cache in place, hence the copy). A small LRU of prefix states lets a later
call reuse (or extend) a prefix encoded earlier, e.g. the hierarchical readout's L2 probes
reuse the L1 history prefill. With ``share_suffix_start`` (default) the common start of a
group's suffixes (every yes/no question begins "Question: will the user's next item be in the
category") is appended to the prefix and prefilled once too: the same token ids at the same
positions, so the scores are unchanged and the batched suffixes shrink to a few tokens.

``reuse_prefix=False`` runs every prompt in full (right-padded batches, no cache): the
reference for parity tests and the "without prefix reuse" line of the benchmark.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from spectra_rec.errors import ConfigError
from spectra_rec.probe.backends.base import Prompt

log = logging.getLogger(__name__)


def context_length(model, tokenizer=None) -> int:
    """The longest sequence the model accepts: ``max_position_embeddings`` (capped by the tokenizer's limit)."""
    cfg = getattr(model, "config", None)
    limits = [getattr(cfg, name, None) for name in ("max_position_embeddings", "n_positions", "max_seq_len")]
    limits = [int(x) for x in limits if isinstance(x, int) and x > 0]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 10**8:
        limits.append(tok_max)
    if not limits:
        raise ConfigError(
            f"cannot tell the context length of {type(model).__name__}: its config has no max_position_embeddings"
        )
    return min(limits)


def _common_start(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Length of the longest common start of two token sequences."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if len(diff) else n


def cache_argument(model) -> str:
    """The name under which ``model.forward`` takes a KV cache: ``cache`` (transformers >= 5.2x) or
    ``past_key_values`` (older 5.x, where ``cache`` would be swallowed by ``**kwargs`` unnoticed).

    transformers 5.24 deprecates ``past_key_values`` for removal in 5.40; reading the signature
    keeps one code path working on both sides of the rename.
    """
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class _Output:
    """A forward pass's logits and cache, whichever name the installed transformers gives the cache."""

    __slots__ = ("logits", "cache")

    def __init__(self, out):
        self.logits = out.logits
        fields = out.keys() if hasattr(out, "keys") else ()
        self.cache = out["cache"] if "cache" in fields else out["past_key_values"] if "past_key_values" in fields else None


def _croppable(cache) -> bool:
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(
        getattr(layer, "is_croppable", False) and not getattr(layer, "is_sliding", False) for layer in layers
    )


@dataclass(eq=False)
class _PrefixState:
    ids: tuple[int, ...]
    cache: object
    """DynamicCache of the prefix, batch size 1; never extended in place (always copied first)."""
    last_logits: torch.Tensor
    """(V,) float32 logits after the prefix's last token (on the CPU)."""


class HFBackend:
    """Score prompts with a transformers causal LM (a ``PeftModel`` works the same)."""

    name = "hf"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        batch_size: int = 32,
        reuse_prefix: bool = True,
        device: str | torch.device | None = None,
        prefix_cache_size: int = 4,
        share_suffix_start: bool = True,
    ):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if prefix_cache_size < 1:
            raise ConfigError(f"prefix_cache_size must be >= 1, got {prefix_cache_size}")
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.batch_size = batch_size
        self.reuse_prefix = reuse_prefix
        self.prefix_cache_size = prefix_cache_size
        self.share_suffix_start = share_suffix_start
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self.max_length = context_length(model, tokenizer)
        self._cache_arg = cache_argument(model)
        self._states: OrderedDict[tuple[int, ...], _PrefixState] = OrderedDict()
        self.stats: Counter = Counter()
        """Forward calls and tokens fed, by kind (prefill / suffix / full / decode)."""

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "reuse_prefix": self.reuse_prefix,
            "share_suffix_start": self.share_suffix_start,
            "batch_size": self.batch_size,
            "device": str(self.device),
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "max_length": self.max_length,
        }

    @property
    def max_live_prefixes(self) -> int:
        """How many users' prefix states stay cached, so a readout's later pass still finds them."""
        # each user may hold two states: the history, and the history + the questions' common start
        return max(1, self.prefix_cache_size // 2) if self.reuse_prefix else 1 << 30

    def clear(self) -> None:
        """Forget cached prefix states (frees their memory)."""
        self._states.clear()

    # ---- public operations ---------------------------------------------------
    @torch.inference_mode()
    def next_token_logprobs(self, prompts: Sequence[Prompt], token_ids: Sequence[int]) -> np.ndarray:
        """Log-probabilities of ``token_ids`` right after each prompt: (n_prompts, n_token_ids)."""
        tid = torch.as_tensor(list(token_ids), dtype=torch.long)
        out = np.empty((len(prompts), len(tid)), dtype=np.float64)
        requests = [(p, list(p.suffix), [len(p.suffix) - 1]) for p in prompts]
        for i, rows in self._run(requests):
            out[i] = torch.log_softmax(rows[0], dim=-1)[tid].double().numpy()
        return out

    @torch.inference_mode()
    def continuation_logprobs(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[int]]) -> np.ndarray:
        """Sum over each continuation's tokens of log p(token | prompt, earlier continuation tokens)."""
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        requests = []
        for p, cont in zip(prompts, continuations):
            cont = list(cont)
            if not cont:
                raise ValueError("empty continuation: nothing to score")
            fed = list(p.suffix) + cont[:-1]
            first = len(p.suffix) - 1  # position (in fed) whose logits predict cont[0]; -1 = prefix end
            requests.append((p, fed, [first + j for j in range(len(cont))]))
        out = np.empty(len(prompts), dtype=np.float64)
        for i, rows in self._run(requests):
            cont = torch.as_tensor(list(continuations[i]), dtype=torch.long)
            lp = torch.log_softmax(torch.stack(rows), dim=-1)
            out[i] = float(lp[torch.arange(len(cont)), cont].double().sum())
        return out

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Prompt],
        max_new_tokens: int,
        stop_ids: Sequence[int] = (),
        stop_strings: Sequence[str] = (),
    ) -> list[list[int]]:
        """Greedy decoding, one prompt at a time; stops at a stop id, a stop string or ``max_new_tokens``.

        The returned ids exclude a final stop id; a stop string stays in the decoded text (callers cut it).
        """
        stop = set(int(s) for s in stop_ids)
        results = []
        for p in prompts:
            total = len(p.prefix) + len(p.suffix) + max_new_tokens
            if total > self.max_length:
                raise ValueError(
                    f"prompt of {len(p.prefix) + len(p.suffix)} tokens + {max_new_tokens} new tokens exceeds "
                    f"the model's context of {self.max_length}"
                )
            if self.reuse_prefix:
                state = self._prefix_state(p.prefix)
                cache = copy.deepcopy(state.cache)
                if p.suffix:
                    o = self._forward(torch.tensor([list(p.suffix)]), past=cache, keep=1, kind="suffix")
                    logits, cache = o.logits[0, -1], o.cache
                else:
                    logits = state.last_logits
            else:
                o = self._forward(torch.tensor([list(p.ids())]), keep=1, kind="full", use_cache=True)
                logits, cache = o.logits[0, -1], o.cache
            gen: list[int] = []
            while True:
                nxt = int(torch.argmax(logits))
                if nxt in stop:
                    break
                gen.append(nxt)
                if len(gen) >= max_new_tokens:
                    break
                if stop_strings:
                    text = self.tokenizer.decode(gen, skip_special_tokens=True)
                    if any(s in text for s in stop_strings):
                        break
                o = self._forward(torch.tensor([[nxt]]), past=cache, keep=1, kind="decode")
                logits, cache = o.logits[0, -1], o.cache
            results.append(gen)
        return results

    # ---- internals -------------------------------------------------------------
    def _forward(self, ids, *, mask=None, past=None, keep=1, kind: str, use_cache: bool | None = None):
        ids = ids.to(self.device)
        self.stats[f"{kind}_calls"] += 1
        self.stats[f"{kind}_tokens"] += int(ids.numel() if mask is None else mask[:, -ids.shape[1] :].sum())
        if isinstance(keep, torch.Tensor):
            keep = keep.to(self.device)
        kwargs = {"input_ids": ids, "logits_to_keep": keep}
        if mask is not None:
            kwargs["attention_mask"] = mask.to(self.device)
        if past is not None:
            kwargs[self._cache_arg] = past
            use_cache = True
        kwargs["use_cache"] = bool(use_cache)
        return _Output(self.model(**kwargs))

    def _prefix_state(self, prefix: tuple[int, ...]) -> _PrefixState:
        """The prefill of ``prefix`` (batch 1): from the LRU, by extending the cached state that
        shares the longest start with it (cropped to that start, when that keeps at least half
        of it), or fresh."""
        prefix = tuple(prefix)
        if not prefix:
            raise ValueError("empty prefix: a prompt needs at least one prefix token")
        if len(prefix) > self.max_length:
            raise ValueError(f"prefix of {len(prefix)} tokens exceeds the model's context of {self.max_length}")
        state = self._states.get(prefix)
        if state is not None:
            self._states.move_to_end(prefix)
            self.stats["prefix_hits"] += 1
            return state
        base, shared = None, 0
        for key, st in self._states.items():
            j = _common_start(key, prefix)
            if j < len(key) and not _croppable(st.cache):
                continue  # only a full match can be reused without cropping
            j = min(j, len(prefix) - 1)  # at least one token is fed, for the last logits
            if 2 * j < len(key):
                continue  # copying a cache to keep less than half of it is not worth it (e.g. two users' headers)
            if j > shared:
                base, shared = st, j
        if base is not None:
            cache = copy.deepcopy(base.cache)
            if shared < len(base.ids):
                cache.crop(shared - len(base.ids))
            rest = torch.tensor([list(prefix[shared:])])
            o = self._forward(rest, past=cache, keep=1, kind="prefill")
            self.stats["prefix_extensions"] += 1
        else:
            o = self._forward(torch.tensor([list(prefix)]), keep=1, kind="prefill", use_cache=True)
        state = _PrefixState(prefix, o.cache, o.logits[0, -1].float().cpu())
        self._states[prefix] = state
        while len(self._states) > self.prefix_cache_size:
            self._states.popitem(last=False)
        return state

    def _run(self, requests):
        """Yield (request index, [logits at each wanted position]) for (prompt, fed tokens, positions).

        A position indexes the fed tokens (suffix + continuation); -1 means "after the prefix".
        """
        if self.reuse_prefix:
            yield from self._run_cached(requests)
        else:
            yield from self._run_full(requests)

    def _run_cached(self, requests):
        start = 0
        while start < len(requests):
            prefix = requests[start][0].prefix
            end = start + 1
            while end < len(requests) and (
                requests[end][0].prefix is prefix or requests[end][0].prefix == prefix
            ):
                end += 1
            group = [(requests[i][1], requests[i][2]) for i in range(start, end)]
            k = self._shared_start(group) if self.share_suffix_start else 0
            if k:  # the suffixes' common start joins the cached prefix (same ids, same positions)
                prefix = tuple(prefix) + tuple(group[0][0][:k])
                group = [(fed[k:], [q - k for q in pos]) for fed, pos in group]
                self.stats["shared_suffix_tokens"] += k * (len(group) - 1)
            state = self._prefix_state(prefix)
            P = len(state.ids)
            fed_rows = []
            for i, (fed, positions) in zip(range(start, end), group):
                if P + len(fed) > self.max_length:
                    raise ValueError(
                        f"prompt of {P + len(fed)} tokens exceeds the model's context of {self.max_length}"
                    )
                if not fed:  # everything wanted is the prefix's last logits
                    yield i, [state.last_logits for _ in positions]
                else:
                    fed_rows.append(i)
            for b in range(0, len(fed_rows), self.batch_size):
                batch = fed_rows[b : b + self.batch_size]
                yield from self._cached_batch(state, [group[i - start] for i in batch], batch)
            start = end

    @staticmethod
    def _shared_start(group) -> int:
        """Length of the common start of a group's fed tokens that can be prefilled once.

        Bounded so that every wanted position stays at or after the new prefix's last token.
        """
        if len(group) < 2:
            return 0
        first = group[0][0]
        k = min(len(fed) for fed, _ in group)
        k = min(k, min(min(pos) + 1 for _, pos in group))
        for fed, _ in group[1:]:
            j = 0
            while j < k and fed[j] == first[j]:
                j += 1
            k = j
            if k == 0:
                break
        return k

    def _cached_batch(self, state: _PrefixState, reqs, index):
        """``reqs``: (fed tokens, wanted positions) per row, all on ``state``'s prefix."""
        B = len(reqs)
        S = max(len(fed) for fed, _ in reqs)
        ids = torch.full((B, S), self.pad_id, dtype=torch.long)
        smask = torch.zeros((B, S), dtype=torch.long)
        for r, (fed, _) in enumerate(reqs):
            ids[r, : len(fed)] = torch.tensor(fed)
            smask[r, : len(fed)] = 1
        keep = sorted({q for _, pos in reqs for q in pos if q >= 0})
        col = {q: j for j, q in enumerate(keep)}
        cache = copy.deepcopy(state.cache)
        if B > 1:
            cache.batch_repeat_interleave(B)
        mask = torch.cat([torch.ones((B, len(state.ids)), dtype=torch.long), smask], dim=1)
        logits = self._forward(ids, mask=mask, past=cache, keep=torch.tensor(keep), kind="suffix").logits
        logits = logits.float().cpu()
        for r, (_, pos) in enumerate(reqs):
            yield index[r], [state.last_logits if q < 0 else logits[r, col[q]] for q in pos]

    def _run_full(self, requests):
        order = list(range(len(requests)))
        for b in range(0, len(order), self.batch_size):
            batch = order[b : b + self.batch_size]
            seqs = [list(requests[i][0].prefix) + list(requests[i][1]) for i in batch]
            for s in seqs:
                if len(s) > self.max_length:
                    raise ValueError(f"prompt of {len(s)} tokens exceeds the model's context of {self.max_length}")
            B, L = len(seqs), max(map(len, seqs))
            ids = torch.full((B, L), self.pad_id, dtype=torch.long)
            mask = torch.zeros((B, L), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            absolute = [[len(requests[i][0].prefix) + q for q in requests[i][2]] for i in batch]
            keep = sorted({q for pos in absolute for q in pos})
            col = {q: j for j, q in enumerate(keep)}
            logits = self._forward(ids, mask=mask, keep=torch.tensor(keep), kind="full").logits.float().cpu()
            for r, i in enumerate(batch):
                yield i, [logits[r, col[q]] for q in absolute[r]]
