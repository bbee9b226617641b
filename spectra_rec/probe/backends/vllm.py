"""vLLM backend (GPU): automatic prefix caching, one generated position, logprobs of exactly the answer tokens.

- Prefix reuse: ``enable_prefix_caching=True``; a user's queries are submitted together (the
  readouts keep them consecutive), so the history prefix's full KV blocks are computed once.
- Scoring: ``SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=ids)`` returns the
  log-probabilities of exactly ``ids`` at the first generated position (requests with
  ``prompt_logprobs`` would bypass the prefix cache, docs/pitfalls.md). vLLM releases without
  ``logprob_token_ids`` fall back to the top-``fallback_logprobs`` list; an id missing from it
  raises (raise ``fallback_logprobs`` / ``max_logprobs``).
- Continuations (category-name readout): one max_tokens=1 request per continuation token on
  ``prompt + continuation[:j]``; all share the prompt's cached blocks.
- LoRA: an align SFT folder is served as base (its CPT model) + ``enable_lora`` adapter, or
  merged into a plain model folder with ``merge=True`` (needed when the adapter touches the
  embeddings or the vocabulary grew).

vLLM and CUDA are needed only when this backend is built; the import is lazy and a missing
piece gives a clear error. Tests skip without CUDA.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from spectra_rec.errors import ConfigError
from spectra_rec.probe.backends import Prompt

log = logging.getLogger(__name__)


def require_vllm():
    """Import vllm, or explain what is missing (the package, or a CUDA device)."""
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "the vllm backend needs the optional 'vllm' package (pip install 'spectra-rec[vllm]') and a CUDA GPU; "
            f"on this machine use --backend hf ({exc})"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the vllm backend needs a CUDA GPU, and torch sees none; use --backend hf")
    return vllm


def resolve_model(model, adapter=None) -> tuple[str, str | None, dict]:
    """(base model path, LoRA adapter path or None, align manifest or {}) for a path or an align folder."""
    path = Path(str(model))
    manifest_file = path / "manifest.json"
    if path.is_dir() and manifest_file.exists() and (path / "tokenizer").is_dir():
        manifest = json.loads(manifest_file.read_text())
        kind = manifest.get("kind")
        if kind == "cpt":
            if manifest["base"].get("weights") != "model":
                raise ConfigError(f"{path}: a CPT LoRA folder; serve it with merge=True")
            return str(path / "model"), adapter, manifest
        if kind == "sft":
            base = manifest["base"]
            if base["kind"] == "cpt":
                cpt_dir = (path / base["dir"]).resolve() if not Path(base["dir"]).is_absolute() else Path(base["dir"])
                cpt_manifest = json.loads((cpt_dir / "manifest.json").read_text())
                if cpt_manifest["base"].get("weights") != "model":
                    raise ConfigError(f"{path}: its CPT stage is a LoRA adapter; serve it with merge=True")
                base_path = str(cpt_dir / "model")
            else:
                base_path = base["path"]
            return base_path, str(path / "adapter"), manifest
        raise ConfigError(f"{path}: manifest kind {kind!r} is neither 'cpt' nor 'sft'")
    return str(model), (str(adapter) if adapter is not None else None), {}


def merged_model_dir(align_dir: Path, out_dir: Path | None = None) -> Path:
    """Fold an align folder's adapters into a plain HF model folder (cached next to it) for vLLM."""
    from spectra_rec.align.io import load_aligned

    align_dir = Path(align_dir)
    out = Path(out_dir) if out_dir is not None else align_dir / "merged"
    if (out / "config.json").exists():
        return out
    model, tokenizer, _ = load_aligned(align_dir, device="cpu", merge=True)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    tmp.replace(out)
    return out


class VLLMBackend:
    """Score prompts with a vLLM ``LLM`` engine."""

    name = "vllm"
    max_live_prefixes = 1 << 30
    """Prefix caching is automatic: readouts may batch every user's queries into one call."""

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        adapter: str | Path | None = None,
        merge: bool = False,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        max_lora_rank: int | None = None,
        fallback_logprobs: int = 100,
        seed: int = 0,
        llm=None,
        **engine_options,
    ):
        vllm = require_vllm()
        from vllm import SamplingParams  # noqa: F401  (checked early)

        self._vllm = vllm
        manifest = {}
        if llm is None:
            if merge and (Path(str(model)) / "manifest.json").exists():
                base, lora = str(merged_model_dir(Path(str(model)))), None
            else:
                base, lora, manifest = resolve_model(model, adapter)
            options = dict(
                model=base,
                tokenizer=base if tokenizer is None or isinstance(tokenizer, str) else None,
                enable_prefix_caching=True,
                dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization,
                tensor_parallel_size=tensor_parallel_size,
                seed=seed,
                max_logprobs=max(fallback_logprobs, 20),
            )
            if isinstance(tokenizer, str):
                options["tokenizer"] = tokenizer
            elif Path(str(model), "tokenizer").is_dir():
                options["tokenizer"] = str(Path(str(model), "tokenizer"))
            if max_model_len is not None:
                options["max_model_len"] = max_model_len
            if lora is not None:
                rank = max_lora_rank or _adapter_rank(lora)
                options.update(enable_lora=True, max_lora_rank=max(rank, 8), max_loras=1)
            options = {k: v for k, v in options.items() if v is not None} | engine_options
            self.llm = vllm.LLM(**options)
            self.lora = lora
        else:
            self.llm = llm
            self.lora = str(adapter) if adapter is not None else None
        self.manifest = manifest
        self.fallback_logprobs = fallback_logprobs
        self.max_length = _max_model_len(self.llm, max_model_len)
        self._lora_request = None
        if self.lora is not None:
            from vllm.lora.request import LoRARequest

            self._lora_request = LoRARequest("spectra", 1, self.lora)

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "vllm": getattr(self._vllm, "__version__", "?"),
            "lora": self.lora,
            "max_length": self.max_length,
            "prefix_caching": True,
        }

    # ---- operations --------------------------------------------------------------------
    def _params(self, token_ids: Sequence[int], max_tokens: int = 1):
        from vllm import SamplingParams

        ids = [int(t) for t in token_ids]
        try:
            return SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=len(ids), logprob_token_ids=ids), True
        except TypeError:  # older vLLM: top-k logprobs only
            return SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=self.fallback_logprobs), False

    def _run(self, prompts: Sequence[Sequence[int]], params):
        from vllm.inputs import TokensPrompt

        requests = [TokensPrompt(prompt_token_ids=list(map(int, p))) for p in prompts]
        for p in prompts:
            if len(p) >= self.max_length:
                raise ValueError(f"prompt of {len(p)} tokens exceeds the model's context of {self.max_length}")
        return self.llm.generate(requests, params, use_tqdm=False, lora_request=self._lora_request)

    def _gather(self, outputs, token_ids: Sequence[int], exact: bool) -> np.ndarray:
        out = np.empty((len(outputs), len(token_ids)), dtype=np.float64)
        for i, o in enumerate(outputs):
            step = o.outputs[0].logprobs[0]
            for j, t in enumerate(token_ids):
                lp = step.get(int(t))
                if lp is None:
                    raise RuntimeError(
                        f"vLLM returned no logprob for token id {t} ("
                        + ("logprob_token_ids ignored?" if exact else f"not in the top {self.fallback_logprobs}; raise fallback_logprobs")
                        + ")"
                    )
                out[i, j] = lp.logprob
        return out

    def next_token_logprobs(self, prompts: Sequence[Prompt], token_ids: Sequence[int]) -> np.ndarray:
        params, exact = self._params(token_ids)
        outputs = self._run([p.ids() for p in prompts], params)
        return self._gather(outputs, token_ids, exact)

    def continuation_logprobs(self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[int]]) -> np.ndarray:
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        requests, owner, targets = [], [], []
        for i, (p, cont) in enumerate(zip(prompts, continuations)):
            base = list(p.ids())
            for j, t in enumerate(cont):
                requests.append(base + list(cont[:j]))
                owner.append(i)
                targets.append(int(t))
        vocab = sorted(set(targets))
        params, exact = self._params(vocab)
        lp = self._gather(self._run(requests, params), vocab, exact)
        col = {t: j for j, t in enumerate(vocab)}
        out = np.zeros(len(prompts), dtype=np.float64)
        for r, (i, t) in enumerate(zip(owner, targets)):
            out[i] += lp[r, col[t]]
        return out

    def generate(
        self, prompts: Sequence[Prompt], max_new_tokens: int, stop_ids: Sequence[int] = (), stop_strings: Sequence[str] = ()
    ) -> list[list[int]]:
        from vllm import SamplingParams

        params = SamplingParams(
            max_tokens=max_new_tokens, temperature=0.0, stop_token_ids=[int(s) for s in stop_ids],
            stop=list(stop_strings) or None,
        )
        outputs = self._run([p.ids() for p in prompts], params)
        return [[t for t in o.outputs[0].token_ids if t not in set(stop_ids)] for o in outputs]


def _max_model_len(llm, given: int | None) -> int:
    for path in (("llm_engine", "model_config"), ("model_config",), ("llm_engine", "vllm_config", "model_config")):
        obj = llm
        for name in path:
            obj = getattr(obj, name, None)
        if obj is not None and getattr(obj, "max_model_len", None):
            return int(obj.max_model_len)
    if given:
        return int(given)
    raise RuntimeError("cannot read the engine's max_model_len; pass max_model_len=")


def _adapter_rank(adapter_dir: str) -> int:
    cfg = Path(adapter_dir) / "adapter_config.json"
    if not cfg.exists():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json")
    return int(json.loads(cfg.read_text()).get("r", 16))
