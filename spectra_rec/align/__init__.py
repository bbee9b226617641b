"""Alignment: tokenizer and tiny model, CPT and LoRA SFT through the Hugging Face Trainer, adapter I/O.

Modules, in data-flow order:

- ``tokenizer``  byte-level BPE trained on the corpus; verbalizers and answer letters forced to one token
- ``model``      ``ModelConfig`` + ``build_tiny_qwen3`` (random init); ``load_base_model`` for local HF dirs
- ``config``     ``AlignConfig`` (frozen, JSON round trip): model, corpus, SFT mixture, optimizers, LoRA
- ``train``      CPT packing, SFT encoding (loss on answer tokens only), the Trainer run
- ``readout_sft`` packed SFT rows: every question of a reference point on one shared prefix pass, and
                 the readouts (logit, name, choice) trained on the whole target distribution (KL)
- ``pipeline``   ``align(data, AlignConfig(), runs)`` -> ``runs/align/sft/<hash>`` (cached, resumable)
- ``io``         ``load_aligned(dir) -> (model, tokenizer, manifest)``
- ``cli``        ``spectra-rec align``

Default on ml-100k: tiny Qwen3 (hidden 128, 4 layers, 1.5M parameters, 4096-token BPE), CPT
0.3 epoch, then a full fine-tune (LoRA is for real base models) of 1 epoch over packed reference
points (2 per user, 20 items of context). ``benchmarks/bench_align.py`` prints the timings and
``benchmarks/tune_align.py`` the dev-cohort table behind the choice.

Heavy libraries (torch, transformers, peft) are imported inside the functions that need them.
"""
