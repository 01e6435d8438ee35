"""The coordinator: gRPC API, trigger loop, dispatcher, lease reaper and the store."""
