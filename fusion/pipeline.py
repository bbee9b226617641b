"""The main job: data -> backbone -> prior -> candidates -> blend -> evaluate -> report.

Every stage is cached under ``runs/`` by a hash of its configuration (``--fresh`` recomputes);
a warm rerun reads the backbone's exported arrays and never imports RecBole.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from fusion.backbones import Backbone, BackboneConfig, backbone_stage, check_backbone_inputs
from fusion.blend import FUSION_RULES, NORMALIZATIONS, affinity, check_w
from fusion.candidates import CANDIDATE_SETS, FAISS_INDEXES, retrieval_candidates, sampled_negatives
from fusion.evaluate import SELECTION_RULES, CaseScores, FusionResult, SetResult, evaluate_fusion
from spectra_rec.data.dataset import Dataset
from spectra_rec.data.split import Split
from spectra_rec.data.stage import DataConfig, data_stage
from spectra_rec.errors import ConfigError
from spectra_rec.priors import registry
from spectra_rec.priors.history import history_prior, is_history_spec
from spectra_rec.priors.pool import POOL_SEPARATOR
from spectra_rec.priors.registry import SPECTRA_PRIORS  # noqa: F401  (run_fusion.py reads it from here)
from spectra_rec.priors.table import PriorTable

log = logging.getLogger(__name__)

DEFAULT_PRIOR = "spectra-name*uhf*exposure"
"""SPECTRA's name readout pooled with uhf and divided by popularity until its dev top-3 exposure is as
diverse as uhf's: on the ml-100k dev cohort the lowest JS among the readouts' pools at uhf's exposure
entropy (docs/defaults.md). The first run aligns and probes the default model (minutes), later runs
read the cached stages."""

DEFAULT_W_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
"""Denser near 0: a normalized prior term moves rankings a lot per unit of w."""


@dataclass(frozen=True)
class FusionConfig:
    """Configuration of one ``run_fusion.py`` run."""

    model: str = "SASRec"
    """RecBole backbone."""
    dataset: str = "ml-100k"
    """Built-in dataset name or directory of atomic files."""
    prior: str = DEFAULT_PRIOR
    """History prior name (``uhf@N``: last N train items), a SPECTRA readout (``spectra``, ``spectra-name``, ...),
    a prior table path, or a pool of them (``spectra-name*uhf``, weights fitted on this run's dev cohort)."""
    w: float | None = None
    """Fixed fusion weight, with the first normalization, for every candidate set (no sweep runs); None:
    chosen on the dev cohort."""
    w_grid: tuple[float, ...] = DEFAULT_W_GRID
    """Weights swept on the dev cohort (must include 0 and 1)."""
    rule: str = "linear"
    """Fusion rule (a name in ``fusion.blend.FUSION_RULES``)."""
    normalizations: tuple[str, ...] = ("minmax", "zscore", "softmax", "rank")
    """Per-user normalizations tried on the dev cohort (the first is used with a fixed w)."""
    candidate_sets: tuple[str, ...] = CANDIDATE_SETS
    """Candidate sets to evaluate."""
    select_on: str = "each"
    """``each``: every candidate set picks its own (normalization, w) on its dev cases (the scale of a
    normalization depends on the set: rank steps are 1/100 on neg99, 1/1000 on neg999); a set name:
    that set's dev choice is applied to all sets."""
    selection: str = "1se"
    """Rule that picks (normalization, w) from the dev sweep: ``1se`` (smallest w within one paired
    standard error of the best) or ``max`` (the best dev mean)."""
    top_n: int = 200
    """Retrieval depth."""
    index: str = "flat"
    """Faiss index for retrieval: flat (exact), hnsw or ivf."""
    epochs: int | None = None
    """Backbone epochs override (upper bound; early stopping on valid NDCG@10)."""
    patience: int | None = None
    """Backbone early-stopping patience override (RecBole's ``stopping_step``)."""
    detect_anomaly: bool = False
    """Debugging only: train the backbone under autograd anomaly detection (about twice as slow)."""
    dropout_kernel: str = "uniform"
    """Backbone dropout masks: ``uniform`` (same distribution, no slow CPU ``bernoulli_``) or ``bernoulli``."""
    amp: bool | None = None
    """Backbone bfloat16 autocast; None: on where the CPU computes bf16 natively."""
    backbone_threads: int | None = None
    """Intra-op threads while the backbone trains; None: 1 for GRU4Rec, torch's default otherwise."""
    max_users: int | None = None
    """Seeded subsample of the evaluated users (quick runs); the backbone still trains on all."""
    dev_fraction: float = 0.2
    """Share of evaluable users in the dev cohort (disjoint from the reported cohort)."""
    n_boot: int = 1000
    """Bootstrap resamples for the lift CIs."""
    k: int = 10
    """Cut-off of NDCG / HR / MRR."""
    seed: int = 0
    """Seed of cohorts, negatives and bootstrap."""
    backbone_seed: int = 2020
    """RecBole's seed."""
    device: str = "cpu"
    """cpu or cuda (backbone training)."""
    split_ratio: float = 0.8
    """Train-window share per user."""
    category_field: str = "class"
    """Item field (token_seq) holding the categories."""
    taxonomy: str | None = None
    """L1 -> [L2, ...] JSON over the categories (``spectra-hier``); default: the dataset folder's."""
    runs: Path = Path("runs")
    """Cache root."""
    out: Path | None = None
    """Output folder (default runs/fusion/<dataset>-<model>-<prior>)."""
    fresh: bool = False
    """Recompute cached stages."""
    backbone_overrides: dict = field(default_factory=dict)
    """Extra RecBole config keys."""
    probe_backend: str = "hf"
    """SPECTRA priors: the probing backend (hf, vllm)."""
    probe_engine: str = "local"
    """SPECTRA priors: probe in this process (local) or on a Ray actor pool (ray); same table either way."""
    probe_ray: object | None = None
    """SPECTRA priors with probe_engine='ray': a ``spectra_rec.probe.distributed.RayConfig`` (workers, address, GPUs)."""
    ceiling: bool = True
    """Also fuse the ``oracle`` prior (the held-out window itself, so labelled as reading held-out data)
    under the same selection rule, reported beside the prior as the ceiling of what a category prior
    can add with this vocabulary."""

    def __post_init__(self):
        if self.w is not None:
            check_w(self.w)
        grid = tuple(float(x) for x in self.w_grid)
        for x in grid:
            check_w(x)
        if 0.0 not in grid or 1.0 not in grid:
            raise ConfigError(f"w_grid must include 0 and 1, got {list(grid)}")
        object.__setattr__(self, "w_grid", tuple(sorted(set(grid))))
        for s in self.candidate_sets:
            if s not in CANDIDATE_SETS:
                raise ConfigError(f"unknown candidate set {s!r}; options: {list(CANDIDATE_SETS)}")
        if self.selection not in SELECTION_RULES:
            raise ConfigError(f"selection must be one of {list(SELECTION_RULES)}, got {self.selection!r}")
        if self.select_on != "each" and self.select_on not in self.candidate_sets:
            raise ConfigError(f"select_on must be 'each' or one of candidate_sets {list(self.candidate_sets)}, "
                              f"got {self.select_on!r}")
        for n in self.normalizations:
            if n not in NORMALIZATIONS:
                raise ConfigError(f"unknown normalization {n!r}; options: {sorted(NORMALIZATIONS)}")
        if self.rule not in FUSION_RULES:
            raise ConfigError(f"unknown fusion rule {self.rule!r}; options: {sorted(FUSION_RULES)}")
        if self.index not in FAISS_INDEXES:
            raise ConfigError(f"unknown --index {self.index!r}; options: {list(FAISS_INDEXES)}")
        if self.max_users is not None and self.max_users < 2:
            raise ConfigError(f"--max-users must be >= 2 (dev and test cohorts), got {self.max_users}")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        self.backbone_config()  # refuse bad backbone settings before any stage runs

    def backbone_config(self) -> BackboneConfig:
        return BackboneConfig(model=self.model, epochs=self.epochs, patience=self.patience, seed=self.backbone_seed,
                              device=self.device, overrides=self.backbone_overrides,
                              detect_anomaly=self.detect_anomaly, dropout_kernel=self.dropout_kernel, amp=self.amp,
                              threads=self.backbone_threads)

    def prior_label(self) -> str:
        """The prior as a folder-name part: a table by its stem, a pool's parts joined by ``+``."""
        def part(spec: str) -> str:
            p = Path(spec)
            return p.stem if p.suffix in (".parquet", ".csv") else spec

        return "+".join(part(s) for s in self.prior.split(POOL_SEPARATOR))

    def output_dir(self, dataset_name: str) -> Path:
        return self.out or self.runs / "fusion" / f"{dataset_name}-{self.model}-{self.prior_label()}"


def resolve_prior(spec: str, split: Split, data_config: DataConfig, runs: Path, fresh: bool = False,
                  backend: str = "hf", ray_config=None, cohorts: tuple[float, int] = (0.2, 0)) -> PriorTable:
    """A history prior by name, the SPECTRA prior (aligned and probed, cached), a table file, or a pool.

    ``backend`` and ``ray_config`` (probe on a Ray actor pool) apply to the SPECTRA priors only;
    ``cohorts`` (dev fraction, seed) is the dev cohort a pool fits its weights on.
    """
    return registry.resolve_prior(spec, split, flag="--prior", data_config=data_config,
                                  spectra=registry.SpectraOptions(runs=runs, fresh=fresh, backend=backend,
                                                                  ray_config=ray_config), cohorts=cohorts)


def cohorts(split: Split, config: FusionConfig) -> tuple[np.ndarray, np.ndarray]:
    dev, test = split.cohorts(config.dev_fraction, config.seed)
    if config.max_users is not None and config.max_users < len(dev) + len(test):
        rng = np.random.default_rng(config.seed + 1)
        n_dev = max(1, int(round(config.max_users * config.dev_fraction)))
        dev = np.sort(rng.choice(dev, size=min(n_dev, len(dev)), replace=False))
        test = np.sort(rng.choice(test, size=min(config.max_users - len(dev), len(test)), replace=False))
    return dev, test


@dataclass
class FusionRun:
    """What a run produced: the fusion result plus everything the report needs."""

    config: FusionConfig
    data: Dataset
    prior: PriorTable
    backbone: Backbone
    result: FusionResult
    cohort_sizes: dict
    timing: dict
    data_summary: dict
    ceiling: FusionResult | None = None
    """The oracle prior's result under the same selection (None with ``ceiling=False``); the result
    itself when the prior is the oracle."""

    @property
    def sets(self) -> dict[str, SetResult]:
        """Per candidate set results (``result.sets``)."""
        return self.result.sets


def build_cases(name: str, split: Split, backbone: Backbone, prior: np.ndarray, users: np.ndarray, config: FusionConfig):
    """Candidates, base scores and prior affinities for one candidate set."""
    if name == "retrieval":
        cands = retrieval_candidates(split, users, backbone.user_repr, backbone.item_emb, config.top_n, config.index)
    else:
        n_neg = int(name[3:])
        cands = sampled_negatives(split, users, n_neg, seed=config.seed + n_neg, name=name)
    safe = np.maximum(cands.items, 0)
    base = np.where(cands.mask, backbone.scores(users, safe), 0.0).astype(np.float64)
    aff = affinity(prior, split.dataset.membership, cands.items)
    slices = split.item_slice[cands.targets]
    return CaseScores(cands, base, aff, slices, config.rule)


def run_fusion(config: FusionConfig) -> FusionRun:
    """Run every stage for ``config`` (reusing cached ones) and return the results."""
    timing = {}

    t = time.perf_counter()
    data_config = DataConfig(dataset=config.dataset, category_field=config.category_field,
                             split_ratio=config.split_ratio, taxonomy=config.taxonomy)
    ds, split, data_folder = data_stage(data_config, config.runs, config.fresh)
    timing["data"] = time.perf_counter() - t

    # Every user-supplied input is checked before the backbone trains (minutes on a clean runs/):
    # the model name and YAML layers, then the prior (a table file is read and matched to the
    # dataset's categories and cohort here). Taxonomy and category field were checked by the data stage.
    bconf = config.backbone_config()
    check_backbone_inputs(bconf, ds.name)

    t = time.perf_counter()
    table = resolve_prior(config.prior, split, data_config, config.runs, config.fresh, config.probe_backend,
                          config.probe_ray if config.probe_engine == "ray" else None,
                          cohorts=(config.dev_fraction, config.seed))
    dev, test = cohorts(split, config)
    users = np.concatenate([dev, test])
    is_test = np.concatenate([np.zeros(len(dev), bool), np.ones(len(test), bool)])
    P = table.matrix(ds, users)
    timing["prior"] = time.perf_counter() - t
    log.info("prior %s: %d users x %d categories; cohorts dev %d / test %d", table.method, *P.shape, len(dev), len(test))

    t = time.perf_counter()
    backbone = backbone_stage(split, data_folder, bconf, config.runs, config.fresh)
    timing["backbone"] = time.perf_counter() - t

    # the ceiling pass reuses each set's candidates and base scores: only the prior affinity differs
    is_oracle = is_history_spec(config.prior) and config.prior.partition("@")[0] == "oracle"
    want_ceiling = config.ceiling and not is_oracle
    kept: dict[str, CaseScores] = {}

    def timed_cases(name: str) -> CaseScores:
        t = time.perf_counter()
        cases = build_cases(name, split, backbone, P, users, config)
        if want_ceiling:
            kept[name] = cases
        timing["candidates"] += time.perf_counter() - t
        return cases

    def evaluate(builder) -> FusionResult:
        return evaluate_fusion(config.candidate_sets, builder, ~is_test, is_test, config.w_grid,
                               config.normalizations, w=config.w, select_on=config.select_on,
                               selection=config.selection, k=config.k, n_boot=config.n_boot, seed=config.seed,
                               rule=config.rule)

    timing["candidates"] = 0.0
    t = time.perf_counter()
    result = evaluate(timed_cases)
    timing["evaluate"] = time.perf_counter() - t - timing["candidates"]

    ceiling = result if (config.ceiling and is_oracle) else None
    if want_ceiling:
        t = time.perf_counter()
        oracle = history_prior(split, "oracle").matrix(ds, users)
        membership = ds.membership

        def oracle_cases(name: str) -> CaseScores:
            cases = kept.pop(name)
            return replace(cases, aff=affinity(oracle, membership, cases.candidates.items))

        ceiling = evaluate(oracle_cases)
        timing["ceiling"] = time.perf_counter() - t

    return FusionRun(
        config=config,
        data=ds,
        prior=table,
        backbone=backbone,
        result=result,
        cohort_sizes={"dev": int(len(dev)), "test": int(len(test))},
        timing=timing,
        data_summary=ds.summary() | {"item_slices": split.summary()["item_slices"]},
        ceiling=ceiling,
    )


def config_dict(config: FusionConfig) -> dict:
    d = asdict(config)
    d["runs"], d["out"] = str(config.runs), (str(config.out) if config.out else None)
    d.pop("fresh")  # how the run was scheduled, not what it computed: a --fresh rerun gives the same results.json
    return d
