"""``spectra-rec`` command line: one subcommand per stage, each defined in its own module.

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; it is
imported only when its subcommand runs, so ``spectra-rec --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from spectra_rec.errors import ConfigError, DataError, PriorTableError

SUBCOMMANDS = {
    "data": ("spectra_rec.data.cli", "load a dataset, split it, write the data-stage artifacts"),
    "convert": ("spectra_rec.data.cli_convert", "turn raw public dataset files (MovieLens-1M/20M, Yelp, Amazon) into atomic files"),
    "priors": ("spectra_rec.priors.cli", "build a history prior table (uhf, uhf-laplace, markov, popularity, uniform, oracle)"),
    "align": ("spectra_rec.align.cli", "continued pretraining and LoRA SFT of a causal LM"),
    "probe": ("spectra_rec.probe.cli", "read per-user category distributions out of the aligned LM"),
    "dg": ("spectra_rec.probe.cli_dg", "direct-generation baseline (uniform on the decoded top-k)"),
    "rerank": ("spectra_rec.probe.cli_rerank", "Qwen3-Reranker-style pointwise baseline"),
    "evaluate": ("spectra_rec.evaluate.cli", "category-level metrics and report for prior tables"),
    "taxonomy": ("spectra_rec.taxonomy.cli", "induce a finer category vocabulary (co-occurrence clusters, embedding clusters, SAE intents)"),
}


def setup_logging(verbose: bool = False) -> None:
    """Entry points only: library modules never configure handlers."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("faiss.loader", "matplotlib"):  # import-time chatter, not progress
        logging.getLogger(noisy).setLevel(logging.WARNING)


def quiet_openmp(spin_when_idle: bool = False) -> str:
    """Set how idle OpenMP threads wait before torch is imported; returns the policy in force.

    Idle threads that spin steal busy cores (torch ran ~5x slower on a shared 2-core machine),
    so the threads sleep at once (PASSIVE). ``spin_when_idle`` (training): when the load average
    says the cores are free, keep the OpenMP runtime's short spin before sleeping, which made an
    SFT step of the default model 27% faster on an idle 2-core machine; the results are the same.
    An explicit environment value wins.
    """
    import os

    if "OMP_WAIT_POLICY" not in os.environ:
        busy = os.getloadavg()[0] >= 0.5 * (os.cpu_count() or 1)
        if busy or not spin_when_idle:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return os.environ.get("OMP_WAIT_POLICY", "default")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="spectra-rec", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    known, rest = parser.parse_known_args(argv)
    quiet_openmp(spin_when_idle=known.command == "align")
    module_name = SUBCOMMANDS[known.command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            parser.error(f"subcommand {known.command!r} is not available in this version")
        raise
    sp = argparse.ArgumentParser(prog=f"spectra-rec {known.command}", description=SUBCOMMANDS[known.command][1])
    module.add_arguments(sp)
    args = sp.parse_args(rest)
    setup_logging(known.verbose)
    try:
        return int(module.run(args) or 0)
    except (DataError, ConfigError, PriorTableError) as exc:
        # bad input named by the library: one line for the user, not a traceback
        print(f"{sp.prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
