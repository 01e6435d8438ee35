"""The coordinator's gRPC services: wire <-> domain at the edge, then plain calls.
Errors become statuses in :mod:`.errors`; credentials are checked in :mod:`.auth`."""
