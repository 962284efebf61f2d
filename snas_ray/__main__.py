import sys

from snas_ray.cli import main

sys.exit(main())
