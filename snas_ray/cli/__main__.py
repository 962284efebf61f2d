"""``python -m snas_ray.cli``, the same as ``snas-ray`` and ``python -m snas_ray``."""

import sys

from snas_ray.cli import main

sys.exit(main())
