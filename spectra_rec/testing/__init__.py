"""Test helpers shipped with the package: tiny random models and tokenizers for fast, real (unmocked) tests, and
contract test mixins (``fusion.FusionRuleTests``, ``priors.PriorSourceTests``) that a new component's tests subclass."""
