"""A cheaper dropout mask for RecBole's models on CPU, with the same distribution.

``torch.nn.Dropout`` draws its mask with ``bernoulli_``, which on the AMD EPYC CPUs this was
measured on ran serially: 29% of a SASRec training step's self CPU time
(``benchmarks/profile_backbone.py``); PyTorch has a faster MKL path for it that some CPUs take.
``torch.rand`` is vectorised, and ``rand < 1 - p`` is a Bernoulli(1 - p) keep mask (to float32's 2^-24 resolution), so
:class:`UniformDropout` keeps ``nn.Dropout``'s semantics: in training it zeroes each element with
probability ``p`` and scales the kept ones by ``1 / (1 - p)``; in eval it is the identity.

:func:`swap_dropout` replaces the ``nn.Dropout`` modules of a built RecBole model in place; the
model's architecture, parameters and state dict are unchanged (dropout has no state), so a
checkpoint trained either way loads into the plain RecBole model.
"""

from __future__ import annotations

import torch
from torch import nn

DROPOUT_KERNELS = ("uniform", "bernoulli")
"""``uniform``: :class:`UniformDropout`; ``bernoulli``: RecBole's own ``nn.Dropout``."""


class UniformDropout(nn.Module):
    """``nn.Dropout(p)`` whose keep mask is ``rand < 1 - p``, drawn from the same global generator."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        keep = 1.0 - self.p
        # one tensor holding mask / keep, so autograd saves one tensor and backward is one multiply
        scale = (torch.rand_like(x) < keep).to(x.dtype).mul_(1.0 / keep)
        return x * scale

    def extra_repr(self) -> str:
        return f"p={self.p}"


def swap_dropout(model: nn.Module) -> int:
    """Replace every ``nn.Dropout`` inside ``model`` by a :class:`UniformDropout` of the same p; returns the count."""
    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:  # subclasses may do more than drop: leave them alone
                setattr(parent, name, UniformDropout(child.p))
                swapped += 1
    return swapped
