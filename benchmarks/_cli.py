"""Command-line plumbing the stand-alone benchmark scripts share (gpu_perf.py, conv_grad_input.py):
usage errors as one line and exit 2, like the project's commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``error: ...; see ... --help`` line and exit 2."""

    def error(self, message):
        fail(f"{message}; see python benchmarks/{Path(sys.argv[0]).name} --help")
