"""Hydra's benchmarks: throughput, latency, PostgreSQL's ceiling, a peer, scale, failover.

Run them with ``python -m bench all`` (see ``bench/README.md``).
"""
