"""Helpers shared by the test suites: databases, waiting on conditions, free ports."""
