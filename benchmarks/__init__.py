"""Benchmarks: one command (`./run bench [name ...]` or `python -m benchmarks`) prints a table each."""
