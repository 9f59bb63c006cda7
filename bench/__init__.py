"""Benchmark harness behind `make bench`: the standard mail mix through the real gateway.

``python -m bench.run`` is the entry point; ``python -m bench.profile_ingest`` shows where the
ingest time goes. Neither is part of the installed package.
"""
