"""Arguments and model loading shared by ``spectra-rec probe``, ``dg`` and ``rerank``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from spectra_rec.data.cli import add_data_arguments, data_config
from spectra_rec.errors import ConfigError
from spectra_rec.probe.readouts import readout_class
from spectra_rec.probe.run import merge_shards, parse_shard, probe_prior, sft_context_items

log = logging.getLogger(__name__)


def add_common(p: argparse.ArgumentParser, model_help: str) -> None:
    add_data_arguments(p)
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    p.add_argument("--adapter", type=Path, help="an align folder (runs/align/sft/<hash> or runs/align/cpt/<hash>)")
    p.add_argument("--model", type=Path, help=model_help)
    p.add_argument("--max-users", type=int, help="probe only the first N users of the cohort")
    p.add_argument("--max-items", type=int, help="most recent train items per prompt (default: the adapter's SFT context)")
    p.add_argument("--shard", default="0/1",
                   help="i/n: this process handles the i-th of n slices of the cohort (n independent processes "
                        "without Ray; the last to finish merges). --engine ray splits the work itself")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process; ray: a Ray Data actor pool, one backend per actor (pip install "
                        "'spectra-rec[ray]')")
    p.add_argument("--address", help="ray: auto (a running local cluster) or HOST:PORT of a head node "
                                     "(default: start a local cluster)")
    p.add_argument("--workers", type=int, default=2, help="ray: actors in the pool")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per actor (default 0)")
    p.add_argument("--out", type=Path, help="prior table (.parquet or .csv); raw scores and metadata go next to it")
    p.add_argument("--merge", action="store_true", help="only merge the complete shards of --out")
    p.add_argument("--fresh", action="store_true", help="discard partial or cached results")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--batch-size", type=int, default=32, help="suffixes per forward pass (hf)")
    p.add_argument("--chunk-users", type=int, default=16, help="users per partial file")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", help="bf16, fp16, fp32 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads (on a shared machine 1 is often fastest)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let the base model run its own code (never read from a folder's manifest)")
    p.add_argument("--merge-lora", action="store_true",
                   help="vllm: serve an align folder merged into one model (cached as the stage <runs>/merged/<hash>) "
                        "instead of base + LoRA adapter")
    p.add_argument("--no-progress", action="store_true")


def set_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def load_data(args):
    from spectra_rec.data.stage import data_stage

    ds, split, _ = data_stage(data_config(args), args.runs)
    return ds, split


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.exists():
        raise ConfigError(f"--adapter {str(folder)!r} is not a finished align folder (no manifest.json)")
    return json.loads(path.read_text())


def resolve_adapter(args, ds, split, allow_align: bool = True):
    """The align folder to probe (aligning the default model when neither --adapter nor --model is given), or None."""
    if args.adapter is not None and args.model is not None:
        raise ConfigError("give --adapter or --model, not both")
    adapter = args.adapter
    if adapter is None and args.model is None:
        if not allow_align:
            raise ConfigError("give --model DIR or --adapter DIR")
        from spectra_rec.align.pipeline import align

        log.info("no --adapter given: aligning the default model (cached under %s)", args.runs)
        adapter = align((ds, split), None, args.runs)
    return adapter


def load_model(args, ds, split, allow_align: bool = True):
    """(model or model path for vllm, tokenizer, adapter folder or None, name, manifest)."""
    adapter = resolve_adapter(args, ds, split, allow_align)
    if adapter is not None:
        manifest = read_manifest(adapter)
        if args.backend == "vllm":
            from spectra_rec.align.io import load_tokenizer

            return adapter, load_tokenizer(Path(adapter) / "tokenizer"), adapter, str(adapter), manifest
        from spectra_rec.align.io import load_aligned

        model, tokenizer, manifest = load_aligned(adapter, device=args.device, dtype=args.dtype, merge=True,
                                                  trust_remote_code=args.trust_remote_code)
        return model, tokenizer, adapter, str(adapter), manifest
    if args.backend == "vllm":
        from transformers import AutoTokenizer

        return args.model, AutoTokenizer.from_pretrained(str(args.model)), None, str(args.model), {}
    from spectra_rec.align.model import load_base_model

    model, tokenizer = load_base_model(args.model, dtype=args.dtype, device=args.device,
                                       trust_remote_code=args.trust_remote_code)
    return model, tokenizer, None, str(args.model), {}


def backend_options(args) -> dict:
    if args.backend == "hf":
        return {"batch_size": args.batch_size}
    opts = {"runs": args.runs, "merge": bool(getattr(args, "merge_lora", False))}
    if args.dtype:
        opts["dtype"] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(args.dtype, args.dtype)
    return opts


def ray_config(args):
    """The --engine ray flags as a RayConfig (flag errors name the flag); None for the local engine."""
    if getattr(args, "engine", "local") != "ray":
        for flag, value, default in (("--address", args.address, None), ("--gpus-per-worker", args.gpus_per_worker, 0.0)):
            if value != default:
                raise ConfigError(f"{flag} needs --engine ray")
        return None
    from spectra_rec.probe.distributed import RayConfig, preflight

    cfg = RayConfig(workers=args.workers, address=args.address, gpus_per_worker=args.gpus_per_worker)
    if args.shard != "0/1":
        raise ConfigError("--shard and --engine ray exclude each other (Ray splits the cohort itself)")
    if args.merge:
        raise ConfigError("--merge is for --shard runs; --engine ray merges when it finishes")
    preflight(cfg)  # before any data or model is loaded
    return cfg


def model_spec(args, adapter):
    from spectra_rec.probe.distributed import ModelSpec

    if adapter is not None:
        read_manifest(adapter)  # a clear error before any cluster starts
        return ModelSpec(str(Path(adapter).resolve()), "align", args.device, args.dtype, args.threads)
    return ModelSpec(str(Path(args.model).resolve()), "model", args.device, args.dtype, args.threads)


def run_probe(args, readout: str, options: dict, default_out: str, allow_align: bool = True, check=None,
              fallbacks: dict | None = None) -> int:
    """Load data and model, probe (sharded, resumable) into ``--out`` and print the table's path.

    An option left None takes the adapter manifest's default (``Readout.manifest_defaults``),
    else its value in ``fallbacks``.
    """
    shard = parse_shard(args.shard)
    rc = ray_config(args)
    if args.backend == "vllm":
        from spectra_rec.probe.backends.vllm import check_loadable, require_vllm

        require_vllm()  # a missing package or a folder vLLM cannot load: one line, before any loading
        if args.model is not None:
            check_loadable(str(args.model))
    set_threads(args)
    if args.merge:
        if args.out is None:
            raise ConfigError("--merge needs --out")
        print(merge_shards(args.out).source)
        return 0
    if check is not None and args.adapter is not None:
        check(args.adapter, read_manifest(args.adapter))  # before any data or weights are loaded
    ds, split = load_data(args)
    if rc is not None:
        return _run_probe_ray(args, rc, ds, split, readout, options, default_out, allow_align, check, fallbacks)
    model, tokenizer, adapter, name, manifest = load_model(args, ds, split, allow_align)
    max_items, out = fill_probe_defaults(args, readout, options, default_out, ds, adapter, manifest, name, check,
                                         fallbacks)
    table = probe_prior(
        ds, split, model, tokenizer, readout, readout_options=options, max_users=args.max_users,
        backend=args.backend, backend_options=backend_options(args), max_items=max_items, shard=shard, out=out,
        chunk_users=args.chunk_users, adapter_manifest=adapter, model_name=name, fresh=args.fresh,
        progress=not args.no_progress,
    )
    if Path(out).exists():
        print(out)
    else:
        log.info("shard %s written (%d users); merge when all shards are done: --merge --out %s",
                 args.shard, len(table.user_ids), out)
    return 0


def fill_probe_defaults(args, readout, options, default_out, ds, adapter, manifest, name, check, fallbacks):
    """Run ``check``; fill the history cap and unset options from the adapter's SFT settings; (max_items, out path)."""
    if check is not None:
        check(adapter, manifest)
    max_items = sft_context_items(manifest) if args.max_items is None else args.max_items
    implied = readout_class(readout).manifest_defaults(manifest)
    for key, fallback in ({k: None for k in implied} | (fallbacks or {})).items():
        if options.get(key) is None:
            options[key] = implied.get(key) or fallback
    out = args.out or args.runs / "probe" / default_out.format(dataset=ds.name, readout=readout, model=Path(name).name)
    return max_items, out


def _run_probe_ray(args, rc, ds, split, readout, options, default_out, allow_align, check, fallbacks) -> int:
    """``run_probe`` on a Ray actor pool: the driver loads data and manifests, never the model."""
    from spectra_rec.probe.distributed import probe_prior_ray

    adapter = resolve_adapter(args, ds, split, allow_align)
    manifest = read_manifest(adapter) if adapter is not None else {}
    name = str(adapter if adapter is not None else args.model)
    max_items, out = fill_probe_defaults(args, readout, options, default_out, ds, adapter, manifest, name, check,
                                         fallbacks)
    probe_prior_ray(
        ds, split, model_spec(args, adapter), readout, out=out, readout_options=options, max_users=args.max_users,
        backend=args.backend, backend_options=backend_options(args), max_items=max_items,
        chunk_users=args.chunk_users, ray_config=rc, model_name=name, fresh=args.fresh,
        progress=not args.no_progress,
    )
    print(out)
    return 0
