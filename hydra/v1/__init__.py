"""Generated protobuf and gRPC stubs for hydra.v1. Never edit by hand."""
