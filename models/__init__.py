"""Model adapters and networks. Knows nothing about suites, files or metrics."""
