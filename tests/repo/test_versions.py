"""The dependency bounds in pyproject.toml are the tested ones, and this environment is inside them."""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

BOUNDED = ("transformers", "peft", "torch", "numpy", "pandas", "datasets")


def _requirements() -> dict[str, Requirement]:
    data = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in data["project"]["dependencies"]]
    return {r.name: r for r in reqs}


@pytest.mark.parametrize("name", BOUNDED)
def test_installed_version_is_inside_the_declared_tested_bounds(name):
    req = _requirements()[name]
    ops = {s.operator for s in req.specifier}
    assert ">=" in ops and "<" in ops, f"{name}: declare a tested lower and upper bound, got {req.specifier}"
    installed = Version(importlib.metadata.version(name))
    assert req.specifier.contains(installed, prereleases=True), f"{name} {installed} outside {req.specifier}"


def test_transformers_floor_is_a_5x_release_the_code_needs():
    req = _requirements()["transformers"]
    floor = next(Version(s.version) for s in req.specifier if s.operator == ">=")
    assert floor.major == 5  # 4.x lacks train_sampling_strategy and from_pretrained(dtype=)
    assert req.specifier.contains("5.19.0")  # what the vLLM CPU build installs in its own venv


def test_hf_backend_passes_the_kv_cache_without_the_deprecated_argument():
    """transformers 5.24 warns that past_key_values "will be removed in version 5.40.0"; the backend
    uses the name the installed forward() takes, so a probe runs without that warning."""
    import inspect

    from spectra_rec.probe.backends.hf import HFBackend, cache_argument
    from spectra_rec.testing.tiny import probe_test_model

    model, tok = probe_test_model()
    expected = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    assert cache_argument(model) == expected
    from spectra_rec.probe.backends import Prompt

    prefix = tuple(tok("a short user history of films")["input_ids"])
    prompts = [Prompt(prefix, tuple(tok(q, add_special_tokens=False)["input_ids"])) for q in (" Yes or", " No then")]
    ids = [tok.convert_tokens_to_ids("ĠYes"), tok.convert_tokens_to_ids("ĠNo")]
    be = HFBackend(model, tok, batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecation warning from the cache call fails the test
        cached = be.next_token_logprobs(prompts, ids)
    assert be.stats["prefill_calls"] >= 1  # the cached path really ran
    full = HFBackend(model, tok, batch_size=4, reuse_prefix=False).next_token_logprobs(prompts, ids)
    np.testing.assert_allclose(cached, full, rtol=1e-4, atol=1e-4)
