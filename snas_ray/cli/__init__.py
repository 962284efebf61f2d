"""``snas-ray`` command line: search | sweep | evaluate | submit | bench | genotype | cost |
collect | train.

Only this package sets up logging handlers. Errors users can fix (config, data, checkpoint,
genotype, a folder in use) print one line and exit with status 2, without a traceback; so do
what the machine refuses (a file that cannot be written, memory exhausted), with status 1.
Modules: ``parser`` builds the parser; ``jobs`` and ``reports`` hold one function per
subcommand.
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


def _one_line(text: str) -> str:
    # A message quoting a file or an exception may hold newlines; the error stays one line.
    return " ".join(text.split("\n")).strip()


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
        print(f"snas-ray: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full disk, a vanished NFS mount, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"snas-ray: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print(
            "snas-ray: error: out of memory (lower the batch size, width or image size)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("snas-ray: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
