"""Benchmarks: one module per benchmark, each measured against a baseline run on the same machine, same run."""
