"""Alignment: tokenizer and tiny model, CPT and LoRA SFT through the Hugging Face Trainer, adapter I/O.

Modules, in data-flow order:

- ``tokenizer``  byte-level BPE trained on the corpus; verbalizers and answer letters forced to one token
- ``model``      ``ModelConfig`` + ``build_tiny_qwen3`` (random init); ``load_base_model`` for local HF dirs
- ``config``     ``AlignConfig`` (frozen, JSON round trip): model, corpus, SFT mixture, optimizers, LoRA
- ``train``      CPT packing, SFT encoding (loss on answer tokens only), the Trainer run
- ``pipeline``   ``align(data, AlignConfig(), runs)`` -> ``runs/align/sft/<hash>`` (cached, resumable)
- ``io``         ``load_aligned(dir) -> (model, tokenizer, manifest)``
- ``cli``        ``spectra-rec align``

Default size on ml-100k (2-core CPU, measured): tiny Qwen3 (hidden 128, 4 layers, 1.5M
parameters, 4096-token BPE), CPT 0.4 epoch of a 1.41M-token corpus (138 steps of 8 x 512
tokens), LoRA r=16 SFT 1 epoch over 2,688 examples (168 steps); about 6 minutes wall in all
on a machine shared with other jobs (``benchmarks/bench_align.py`` prints the figures).

Heavy libraries (torch, transformers, peft) are imported inside the functions that need them.
"""
