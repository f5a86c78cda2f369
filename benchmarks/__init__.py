"""Benchmarks against the real local stack (``make bench``); not part of ``make test``."""
