"""matplotlib for the collector's plots: imported on first use, Agg backend, atomic PNG files.

Importing matplotlib costs most of a second, so no plotting module imports it at module level;
``snas-ray collect`` pays for it only when it draws.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from snas_ray.layout import atomic_write_bytes

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only; never needs a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG at ``path`` atomically and release it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
