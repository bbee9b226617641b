"""Probing: read per-user category distributions out of a causal LM (docs/formulas.md, "SPECTRA readouts").

    readout_base.py  the readout math, the Readout interface, its frozen config and the registry
    readouts.py      logit (yes/no), name, choice (multi-choice, anchored blocks for K > 26), hier (L1 -> L2);
                     imports dg and reranker, so the registry (READOUTS, make_readout) holds every readout
    dg.py            direct-generation baseline (uniform on the decoded top-k, parse counts)
    reranker.py      Qwen3-Reranker-format pointwise baseline (a model not aligned on the data)
    prompts.py       templates -> token ids; context fitting; single-token checks
    backends/        hf (shared-prefix KV reuse) and vllm (automatic prefix caching)
    shards.py        cohorts, shards, partial files and their merge (shared by run.py and distributed.py)
    run.py           probe_prior (sharded, resumable) and spectra_prior (align + probe, cached)
    distributed.py   the same probe on a Ray Data actor pool

Importing this package loads neither torch nor transformers; backends import them when built.
"""

from spectra_rec.probe.readouts import PROBE_READOUTS, READOUTS, make_readout
from spectra_rec.probe.run import merge_shards, probe_prior, spectra_prior

__all__ = ["PROBE_READOUTS", "READOUTS", "make_readout", "merge_shards", "probe_prior", "spectra_prior"]
