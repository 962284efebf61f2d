"""The SNAS search: its step and evaluation (``loop``), its outputs, and running it (``run``)."""

from snas_ray.search.loop import SearchLoop, budget_size, learning_rate
from snas_ray.search.outputs import SearchResult, write_search_outputs
from snas_ray.search.run import build_search, run_search

__all__ = [
    "SearchLoop",
    "SearchResult",
    "budget_size",
    "build_search",
    "learning_rate",
    "run_search",
    "write_search_outputs",
]
