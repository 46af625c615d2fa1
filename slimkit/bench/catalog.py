"""Imports every benchmark module so the benchmark registry is complete (one line each)."""
