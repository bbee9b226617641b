"""``spectra-rec align``: continued pretraining and LoRA SFT, cached under ``runs/align/``.

    spectra-rec align --dataset ml-100k                       # tiny Qwen3 from scratch: CPT + LoRA SFT
    spectra-rec align --dataset ml-100k --stage cpt           # CPT only (the pretrain-only model)
    spectra-rec align --dataset DIR --base-model ~/Qwen3-0.6B # LoRA CPT + LoRA SFT of a local HF model
    torchrun --nproc-per-node 4 -m spectra_rec.cli align ...  # DDP through the HF Trainer (gloo on CPU, NCCL on GPUs);
                                                              # only rank 0 writes the stage folders
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

from spectra_rec.align.config import CPT_MODES, STAGES, AlignConfig
from spectra_rec.data.cli import add_data_arguments, data_config

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--base-model", default=None, metavar="PATH",
                   help="local Hugging Face causal LM directory (default: a small Qwen3 trained from scratch)")
    p.add_argument("--trust-remote-code", action="store_true", help="let --base-model run its own code")
    p.add_argument("--stage", choices=STAGES, default="both",
                   help="cpt: CPT only; sft: SFT without CPT (base model); both: CPT then SFT")
    p.add_argument("--cpt-mode", choices=CPT_MODES, default="auto",
                   help="CPT as a full fine-tune or LoRA (auto: full from scratch, lora for --base-model)")
    p.add_argument("--max-users", type=int, default=None, help="seeded sample of users (default: all)")
    p.add_argument("--epochs", type=float, nargs="+", default=None, metavar="E",
                   help="epochs of CPT and SFT (one value sets both)")
    p.add_argument("--max-steps", type=int, nargs="+", default=None, metavar="N",
                   help="optimizer steps of CPT and SFT (one value sets both; overrides --epochs)")
    p.add_argument("--lr", type=float, nargs="+", default=None, metavar="LR", help="learning rates of CPT and SFT")
    p.add_argument("--batch-size", type=int, nargs="+", default=None, metavar="B", help="batch sizes of CPT and SFT")
    p.add_argument("--grad-accum", type=int, default=None, help="gradient accumulation steps (both phases)")
    p.add_argument("--context-items", type=int, default=None, help="N: interactions of SFT context")
    p.add_argument("--history-summary", action="store_true",
                   help="sum up the interactions older than the SFT context in one line of category shares")
    p.add_argument("--refs-per-user", type=int, default=None, help="SFT rows (last reference points) per user")
    p.add_argument("--refs-per-row", type=int, default=None,
                   help="SFT reference points that share one history prefix (packed readout SFT)")
    p.add_argument("--mixture", default=None, metavar="JSON",
                   help='SFT format mixture, e.g. \'{"name": 0.4, "yes_no": 0.3, "choice": 0.2, "dg": 0.1}\'')
    p.add_argument("--max-length", type=int, default=None, help="tokens per training sequence")
    p.add_argument("--lora-r", type=int, default=None)
    p.add_argument("--lora-alpha", type=int, default=None)
    p.add_argument("--lora-dropout", type=float, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--bf16", nargs="?", const="on", choices=("auto", "on", "off"), default=None,
                   help="bf16 autocast in training (default auto: on CUDA GPUs that support it and on CPUs with "
                        "native bf16; a bare --bf16 means on)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in backward: less memory for large base models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", type=Path, default=None, help="AlignConfig JSON (flags override it)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="run directory")
    p.add_argument("--fresh", action="store_true", help="recompute even when a cached folder exists")


def _pair(values, i: int):
    if values is None:
        return None
    return values[0] if len(values) == 1 else values[i]


def config_from_args(args) -> AlignConfig:
    base = AlignConfig.from_dict(json.loads(args.config.read_text())) if args.config else AlignConfig()
    changes: dict = {"seed": args.seed, "cpt_mode": args.cpt_mode}
    if args.base_model is not None:
        changes["base_model"] = str(Path(args.base_model).expanduser())
    if args.trust_remote_code:
        changes["trust_remote_code"] = True
    if getattr(args, "bf16", None) in ("on", "off"):
        changes["bf16"] = args.bf16 == "on"
    elif getattr(args, "bf16", None) == "auto":
        changes["bf16"] = None
    if getattr(args, "gradient_checkpointing", False):
        changes["gradient_checkpointing"] = True
    if args.max_users is not None:
        changes["max_users"] = args.max_users
    if args.max_length is not None:
        changes["max_length"] = args.max_length
    for i, key in enumerate(("cpt_train", "sft_train")):
        tc = getattr(base, key)
        upd = {}
        if _pair(args.epochs, i) is not None:
            upd["epochs"] = _pair(args.epochs, i)
        if _pair(args.max_steps, i) is not None:
            upd["max_steps"] = _pair(args.max_steps, i)
        if _pair(args.lr, i) is not None:
            upd["learning_rate"] = _pair(args.lr, i)
        if _pair(args.batch_size, i) is not None:
            upd["batch_size"] = _pair(args.batch_size, i)
        if args.grad_accum is not None:
            upd["grad_accum"] = args.grad_accum
        if upd:
            changes[key] = replace(tc, **upd)
    sft = {}
    if args.context_items is not None:
        sft["context_items"] = args.context_items
    if args.history_summary:
        sft["history_summary"] = True
    if args.refs_per_user is not None:
        sft["refs_per_user"] = args.refs_per_user
    if args.refs_per_row is not None:
        sft["refs_per_row"] = args.refs_per_row
    if args.mixture is not None:
        sft["mixture"] = json.loads(args.mixture)
    if sft:
        changes["sft"] = replace(base.sft, **sft)
    lora = {k: v for k, v in (("r", args.lora_r), ("alpha", args.lora_alpha), ("dropout", args.lora_dropout))
            if v is not None}
    if lora:
        changes["lora"] = replace(base.lora, **lora)
        changes["cpt_lora"] = replace(base.cpt_lora, **lora)
    return replace(base, **changes)


def run(args) -> int:
    import torch  # OMP_WAIT_POLICY was set by spectra_rec.cli.main (quiet_openmp, spinning when idle)

    if args.threads:
        torch.set_num_threads(args.threads)
    from spectra_rec.align.io import read_align_manifest
    from spectra_rec.align.pipeline import align
    config = config_from_args(args)
    out = align(data_config(args), config, runs=args.runs, fresh=args.fresh, stage=args.stage, device=args.device)
    m = read_align_manifest(out)
    tr = m.get("training", {})
    print(f"{m['kind']} folder: {out}")
    if m.get("cpt"):
        c = m["cpt"]
        print(f"  CPT: {c['seconds']}s, val loss {c['eval_loss_before']} -> {c['eval_loss_after']}")
    print(f"  {m['kind'].upper()}: {tr.get('seconds')}s, {tr.get('steps')} steps, {tr.get('tokens_per_second')} tokens/s, "
          f"train loss (last 10 logs) {tr.get('train_loss_last10_mean')}")
    print(f"  validation loss before -> after: {tr.get('eval_loss_before')} -> {tr.get('eval_loss_after')}")
    return 0
