"""The top-level ``datasets/`` folder next to Hugging Face ``datasets``.

Without the real package, a folder named ``datasets`` on ``sys.path`` (the repository root,
whenever a script runs from it) is imported as a namespace package, so transformers'
``is_datasets_available()`` says True and the Trainer breaks. The toolkit depends on
``datasets``, whose regular package wins over the namespace portion, and keeps the folder free
of Python files. These tests run from the repository root, in a fresh interpreter, as a user does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TRAIN_FROM_ROOT = r"""
import json, sys, tempfile
from pathlib import Path
import datasets
from transformers.utils import is_datasets_available
from spectra_rec.align.config import TrainConfig
from spectra_rec.align.train import ListDataset, train
from spectra_rec.testing.tiny import tiny_model_and_tokenizer

model, tok = tiny_model_and_tokenizer()
rows = ListDataset([{"input_ids": tok(f"Item {j} (1990) [G0-s1]")["input_ids"],
                     "labels": tok(f"Item {j} (1990) [G0-s1]")["input_ids"]} for j in range(8)])
with tempfile.TemporaryDirectory() as tmp:
    summary = train(model, tok, rows, {"val": rows}, TrainConfig(max_steps=2, batch_size=4, save_steps=2,
                    logging_steps=1), Path(tmp), seed=0)
print(json.dumps({"datasets_file": getattr(datasets, "__file__", None), "available": is_datasets_available(),
                  "steps": summary["steps"], "eval_after": summary["eval_loss_after"]}))
"""


def test_the_datasets_folder_holds_no_python_files():
    folder = ROOT / "datasets"
    assert folder.is_dir()
    assert not [p.name for p in folder.rglob("*.py")]


def test_the_hf_trainer_builds_and_trains_from_the_repository_root():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    # ``python -c`` puts the working directory first on sys.path, where ``datasets/`` shadows any
    # same-named namespace candidate: exactly a user's run from the clone.
    out = subprocess.run([sys.executable, "-c", TRAIN_FROM_ROOT], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # The real package is imported, not the repository's folder.
    assert result["datasets_file"] is not None and Path(result["datasets_file"]).parent.parent != ROOT
    assert result["available"] is True
    assert result["steps"] == 2
    assert set(result["eval_after"]) == {"val"} and result["eval_after"]["val"] > 0
