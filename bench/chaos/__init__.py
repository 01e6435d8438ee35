"""The chaos test: a real Hydra cluster under coordinator, agent and PostgreSQL
failures, then checked against the guarantees of docs/architecture.md from what PostgreSQL recorded.

Run it as ``python -m bench.chaos --duration 60 --seed 1234``; see README.md here.
"""
