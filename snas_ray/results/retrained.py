"""One genotype's retrained test accuracy over seeds, as an evaluation measured it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

__all__ = ["GenotypeStats"]


@dataclass(frozen=True)
class GenotypeStats:
    """Test accuracy (fractions) of one genotype's retrainings, one per seed.

    Attributes:
        name: ``search-1``, ``random-1a``, ...
        source: ``search`` or ``random``.
        genotype: Its genotype file, relative to the evaluation folder.
        cost: ``params``, ``flops``, ``mac`` of the retrain network.
        accs: Final test accuracy of each retraining, in seed order.
        seeds: The seeds.
        matched_to: For a random genotype, the front genotype it is matched to in cost.
        search_run: For a front genotype, its search run folder, relative to the evaluation.
    """

    name: str
    source: str
    genotype: str
    cost: dict[str, float]
    accs: tuple[float, ...]
    seeds: tuple[int, ...]
    matched_to: str | None = None
    search_run: str | None = None

    @property
    def n(self) -> int:
        return len(self.accs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accs)

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (n - 1); None for a single seed."""
        return statistics.stdev(self.accs) if len(self.accs) > 1 else None

    def format(self) -> str:
        """``98.42 ± 0.16% (3 seeds)``."""
        spread = "" if self.std is None else f" ± {100 * self.std:.2f}"
        return f"{100 * self.mean:.2f}{spread}% ({self.n} seed{'s' if self.n != 1 else ''})"
