"""The types every backend shares: :class:`Prompt` and the :class:`Backend` protocol.

Apart from the backends' package so that ``hf`` and ``vllm`` import them without importing
the registry that builds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np


@dataclass(frozen=True, eq=False)
class Prompt:
    """Token ids of one query: ``prefix`` (shared across a user's queries) + ``suffix``."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...] = ()

    def ids(self) -> tuple[int, ...]:
        return self.prefix + self.suffix


class Backend(Protocol):
    name: str
    max_length: int
    """Longest sequence (prompt + continuation) the model accepts, in tokens."""

    def next_token_logprobs(self, prompts: Sequence[Prompt], token_ids: Sequence[int]) -> np.ndarray: ...

    def continuation_logprobs(
        self, prompts: Sequence[Prompt], continuations: Sequence[Sequence[int]]
    ) -> np.ndarray: ...

    def generate(
        self, prompts: Sequence[Prompt], max_new_tokens: int, stop_ids: Sequence[int] = ()
    ) -> list[list[int]]: ...

    def describe(self) -> dict: ...


__all__ = ["Backend", "Prompt"]
