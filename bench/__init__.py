"""dfu-bench harness: CLI, config, data, stages, metrics and reports."""

__version__ = "0.1.0"
