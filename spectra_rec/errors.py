"""The few exception and warning types of spectra-rec.

Each subclasses a built-in so callers can catch ``ValueError`` without importing us;
messages say what was expected and what came (the file, field or argument by name).
"""


class DataError(ValueError):
    """A dataset file or field is missing, malformed or inconsistent."""


class PriorTableError(ValueError):
    """A prior table does not match the dataset or breaks a distribution invariant."""


class ConfigError(ValueError):
    """A configuration field or command-line argument has a bad value."""


class DataWarning(UserWarning):
    """Degenerate but legal input (an empty slice, an item without categories)."""


class ConfigWarning(UserWarning):
    """A setting that will be ignored or is probably a typo (an unknown RecBole YAML key)."""


def require_positive(config, *names: str) -> None:
    """Raise ``ConfigError("<Class>.<field> must be >= 1, got <value>")`` for the first field below 1."""
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ConfigError(f"{type(config).__name__}.{name} must be >= 1, got {value}")
