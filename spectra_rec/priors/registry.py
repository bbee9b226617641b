"""Every prior spec the toolkit accepts, resolved in one place (``--prior`` of the main job, ``--priors`` of evaluate).

A spec is one of

- a history prior name (``uhf``, ``uhf-decay``, ``markov``, ..., the ``oracle`` diagnostic) or a
  windowed count prior ``uhf@N`` / ``uhf-laplace@N`` (:mod:`spectra_rec.priors.history`);
- a SPECTRA readout name (:data:`SPECTRA_PRIORS`): aligned and probed on first use, then read from
  the cached probe stage (the same stage whichever command asks for it);
- a path to a prior table (``.parquet`` / ``.csv``);
- a log-linear pool of any of these, ``A*B`` (``spectra-name*uhf-decay``), its weights fitted on
  the dev cohort (:mod:`spectra_rec.priors.pool`); the pool-only part ``exposure``
  (``spectra-name*uhf*exposure``) divides it by popularity until its dev top-3 exposure is as diverse
  as UHF's.

Adding a history prior touches ``history.py`` only (its registry dict); adding a SPECTRA readout
as a prior is one entry of :data:`SPECTRA_PRIORS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spectra_rec.errors import ConfigError
from spectra_rec.priors.history import HISTORY_PRIORS, WINDOWED, history_prior, is_history_spec
from spectra_rec.priors.pool import EXPOSURE_PART, POOL_SEPARATOR, is_pool_spec, pool_parts, pool_tables
from spectra_rec.priors.table import PriorTable

SPECTRA_PRIORS = {"spectra": "logit", "spectra-name": "name", "spectra-choice": "choice", "spectra-hier": "hier"}
"""SPECTRA readouts usable as priors: name -> probe readout (align on the first use, then cached)."""

TABLE_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class SpectraOptions:
    """How a SPECTRA prior is built; history priors and table files ignore it."""

    runs: Path = Path("runs")
    """Cache root of the align and probe stages."""
    fresh: bool = False
    """Recompute the probe stage (a cached adapter is reused)."""
    backend: str = "hf"
    """Probing backend: hf or vllm."""
    ray_config: object | None = None
    """A ``spectra_rec.probe.distributed.RayConfig`` to probe on a Ray actor pool (same table); None: this process."""
    adapter: Path | None = None
    """An align folder to probe instead of aligning the default model."""
    tau: float | None = None
    """Softmax temperature of the readout; None: the readout's default (1), which shares its cache entry."""


def prior_names() -> list[str]:
    """Every registered prior name (history, then SPECTRA), for help texts and error messages."""
    return sorted(HISTORY_PRIORS) + sorted(SPECTRA_PRIORS)


def uses_spectra(spec: str) -> bool:
    """Whether ``spec`` probes a SPECTRA readout: it is one, or a pool with one among its parts."""
    parts = spec.split(POOL_SEPARATOR) if is_pool_spec(spec) else [spec]
    return any(p.strip() in SPECTRA_PRIORS for p in parts)


def is_table_spec(spec: str) -> bool:
    """Whether ``spec`` is meant as a prior table file."""
    path = Path(spec)
    return path.suffix in TABLE_SUFFIXES or path.exists()


def resolve_prior(spec: str, split, *, flag: str = "--prior", data_config=None,
                  spectra: SpectraOptions = SpectraOptions(), cohorts: tuple[float, int] = (0.2, 0)) -> PriorTable:
    """The prior table ``spec`` names for ``split``; a bad spec is a one-line ConfigError naming ``flag``.

    ``data_config`` (a ``DataConfig``) identifies the data for the SPECTRA probe stage; without it
    the probe stage reads ``split`` directly. ``cohorts`` (dev fraction, seed) is the dev cohort a
    pool fits its weights on: the caller's own, so that its reported cohort stays unread.
    """
    if is_pool_spec(spec):
        parts = pool_parts(spec, flag)
        exposure = EXPOSURE_PART in parts
        if parts.count(EXPOSURE_PART) > 1 or parts == [EXPOSURE_PART] * len(parts):
            raise ConfigError(f"{flag} {spec!r}: {EXPOSURE_PART!r} may appear once in a pool, next to at least one prior")
        parts = [p for p in parts if p != EXPOSURE_PART]
        unknown = [p for p in parts if not (is_history_spec(p) or p in SPECTRA_PRIORS or is_table_spec(p))]
        if unknown:
            raise _unknown_spec(unknown[0], flag)
        # the cheap parts first: a bad history spec or table fails before a SPECTRA part aligns for minutes
        order = sorted(range(len(parts)), key=lambda i: parts[i] in SPECTRA_PRIORS)
        got = {i: resolve_prior(parts[i], split, flag=flag, data_config=data_config, spectra=spectra) for i in order}
        return pool_tables([got[i] for i in range(len(parts))], parts, split,
                           dev_fraction=cohorts[0], cohort_seed=cohorts[1], exposure=exposure)
    if spec == EXPOSURE_PART:
        raise ConfigError(f"{flag} {spec!r} is a pool part only, e.g. spectra-name*uhf*{EXPOSURE_PART}")
    if is_history_spec(spec):
        try:
            return history_prior(split, spec)
        except ConfigError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    if spec in SPECTRA_PRIORS:
        return _spectra_prior(spec, split, flag, data_config, spectra)
    if is_table_spec(spec):
        return PriorTable.load(spec, categories=split.dataset.categories)  # missing columns named before row sums
    raise _unknown_spec(spec, flag)


def _unknown_spec(spec: str, flag: str) -> ConfigError:
    return ConfigError(
        f"{flag} {spec!r} is neither a prior name (history priors {sorted(HISTORY_PRIORS)}, "
        f"{'/'.join(WINDOWED)}@N for the last N train items; SPECTRA readouts {sorted(SPECTRA_PRIORS)}) "
        f"nor a {'/'.join(TABLE_SUFFIXES)} prior table (or a pool of them, A*B, with an optional {EXPOSURE_PART} part)"
    )


def _spectra_prior(spec: str, split, flag: str, data_config, options: SpectraOptions) -> PriorTable:
    try:  # torch and transformers load only when a SPECTRA prior is asked for
        from spectra_rec.probe.run import spectra_prior
    except ImportError as exc:
        raise ConfigError(f"{flag} {spec} needs the probing stage, which failed to import: {exc}") from exc
    backend_options = {"runs": options.runs} if options.backend == "vllm" else {}
    readout_options = {} if options.tau is None else {"tau": options.tau}
    data = data_config if data_config is not None else split.dataset
    return spectra_prior(data, split, runs=options.runs, readout=SPECTRA_PRIORS[spec], fresh=options.fresh,
                         adapter=options.adapter, readout_options=readout_options, backend=options.backend,
                         backend_options=backend_options, ray_config=options.ray_config)
