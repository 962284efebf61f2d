"""``snas-ray`` command line: search | sweep | evaluate | submit | bench | genotype | cost |
collect | train.

Only this package sets up logging handlers. Errors users can fix (config, data, checkpoint,
genotype) print one line and exit with status 2, without a traceback. Modules: ``parser``
builds the parser; ``jobs`` and ``reports`` hold one function per subcommand.
"""

from __future__ import annotations

import logging
import sys

from snas_ray.cli.evaluate import cmd_evaluate
from snas_ray.cli.jobs import cmd_search, cmd_submit, cmd_sweep, cmd_train
from snas_ray.cli.parser import build_parser
from snas_ray.cli.reports import cmd_bench, cmd_collect, cmd_cost, cmd_genotype

__all__ = ["build_parser", "main"]

_COMMANDS = {
    "search": cmd_search,
    "sweep": cmd_sweep,
    "evaluate": cmd_evaluate,
    "submit": cmd_submit,
    "bench": cmd_bench,
    "genotype": cmd_genotype,
    "cost": cmd_cost,
    "collect": cmd_collect,
    "train": cmd_train,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``snas-ray`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    from snas_ray.errors import GenotypeError, SnasRayError

    try:
        return _COMMANDS[args.command](args)
    except (SnasRayError, GenotypeError) as exc:
        print(f"snas-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("snas-ray: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
