"""`python -m bench` == the `bench` console script (torchrun -m bench works too)."""
import sys

from bench.cli import main

sys.exit(main())
