"""The coordinator's schema migrations, ``NNNN_verb_object.sql``, append-only.

They live at the top of the repository and install as the package
``hydra.coordinator.migrations`` (pyproject ``package-dir``), so that an
editable install and a wheel both find them through importlib.resources.
"""
