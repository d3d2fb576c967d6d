"""Benchmarks of the gateway against references run alongside; see benchmarks/README.md."""
