"""The CUDA side in one go (under 10 minutes on one GPU): a pass/fail table with timings.

    python benchmarks/gpu_check.py                 # on a CUDA machine, from the repository root
    python benchmarks/gpu_check.py --runs /scratch/gpu-check

Checks, each in its own process with its own time limit:

1. vllm-parity: the vLLM backend's tests (tests/probe/test_vllm*.py) with vLLM's CUDA build:
   hf vs vllm float32 parity (logit, name, choice, hier), DG greedy text, LoRA serving, merged model.
2. bf16-probe: the default adapter (aligned first if none is cached under --runs) probed on
   CUDA in bf16 for --users users, compared with the float32 CPU probe of the same users
   (max |p_bf16 - p_fp32|; bf16 is expected to differ by ~1e-2 on this tiny model, not more).
3. sasrec-cuda: one RecBole SASRec epoch on --device cuda (run_fusion.py --epochs 1, UHF prior).

Without CUDA it says so and runs nothing (exit 0): the script is meant for a GPU machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA GPU"
    return True, f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"


def _run(cmd: list[str], timeout: int, env: dict) -> tuple[bool, float, str]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - t0, f"timed out after {timeout}s"
    seconds = time.perf_counter() - t0
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, seconds, (tail[-1] if tail else "")[:120]


def _bf16_vs_fp32(runs: Path, users: int, env: dict, timeout: int) -> tuple[bool, float, str]:
    """Probe the default adapter on CUDA in bf16 and on CPU in fp32; report the largest difference."""
    out = runs / "gpu-check"
    common = [sys.executable, "-m", "spectra_rec.cli", "probe", "--dataset", "ml-100k", "--runs", str(runs),
              "--readout", "logit", "--max-users", str(users), "--no-progress", "--fresh"]
    t0 = time.perf_counter()
    ok, _, note = _run(common + ["--device", "cuda", "--dtype", "bf16", "--out", str(out / "bf16.parquet")], timeout, env)
    if not ok:
        return False, time.perf_counter() - t0, note
    ok, _, note = _run(common + ["--device", "cpu", "--dtype", "fp32", "--out", str(out / "fp32.parquet")], timeout, env)
    if not ok:
        return False, time.perf_counter() - t0, "fp32 reference: " + note
    import numpy as np

    sys.path.insert(0, str(REPO))
    from spectra_rec.priors.table import PriorTable

    a, b = PriorTable.load(out / "bf16.parquet"), PriorTable.load(out / "fp32.parquet")
    diff = float(np.abs(a.probs - b.probs).max())
    return bool(diff < 5e-2), time.perf_counter() - t0, f"{len(a.user_ids)} users, max |p_bf16 - p_fp32| = {diff:.2e}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=REPO / "runs", help="cache root (the default adapter is reused from here)")
    p.add_argument("--users", type=int, default=200, help="users of the bf16 probe")
    args = p.parse_args(argv)
    ok, device = _cuda()
    print(f"device: {device}")
    checks = ["vllm-parity", "bf16-probe", "sasrec-cuda"]
    if not ok:
        print("no CUDA: nothing run (this script checks the GPU side; the CPU side is `make test` and `make test-vllm`)")
        print(_table([(c, "SKIP", None, "no CUDA") for c in checks]))
        return 0
    env = os.environ | {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows = []
    tests = ["tests/probe/test_vllm.py", "tests/probe/test_vllm_cli.py"]
    passed, s, note = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], 300, env)
    import re

    n_passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", note)) else 0
    rows.append(("vllm-parity", "PASS" if passed and n_passed >= 9 else "FAIL", s, note))  # 9 vLLM tests; not skips
    passed, s, note = _bf16_vs_fp32(args.runs, args.users, env, 240)
    rows.append(("bf16-probe", "PASS" if passed else "FAIL", s, note))
    passed, s, note = _run([sys.executable, "run_fusion.py", "--model", "SASRec", "--prior", "uhf", "--epochs", "1",
                            "--device", "cuda", "--max-users", "300", "--n-boot", "100", "--runs", str(args.runs),
                            "--out", str(args.runs / "gpu-check" / "sasrec")], 240, env)
    rows.append(("sasrec-cuda", "PASS" if passed else "FAIL", s, note))
    print(_table(rows))
    return 0 if all(r[1] == "PASS" for r in rows) else 1


def _table(rows) -> str:
    lines = ["| check | result | seconds | note |", "| --- | --- | ---: | --- |"]
    for name, status, seconds, note in rows:
        lines.append(f"| {name} | {status} | {'' if seconds is None else f'{seconds:.1f}'} | {note} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
