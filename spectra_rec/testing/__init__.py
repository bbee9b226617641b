"""Test helpers shipped with the package: tiny random models and tokenizers for fast, real (unmocked) tests
(``tiny``: the tiny Qwen3, the sharpened probe test model, the tiny dataset), and contract test mixins
(``fusion.FusionRuleTests``, ``readouts.ReadoutTests``, ``priors.PriorSourceTests``) that a new component's
tests subclass."""
