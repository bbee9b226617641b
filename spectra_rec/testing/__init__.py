"""Test helpers shipped with the package: tiny random models and tokenizers for fast, real (unmocked) tests."""
