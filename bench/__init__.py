"""Benchmarks. Nothing here is imported by the server unless a benchmark turns it on."""
