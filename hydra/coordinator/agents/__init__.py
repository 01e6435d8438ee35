"""The coordinator's side of the agents: their streams, sessions, messages, and
the commands coordinators send each other about them."""
