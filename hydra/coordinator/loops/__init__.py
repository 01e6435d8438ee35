"""The coordinator's background loops: triggers, dispatcher, reaper, heartbeats,
presence. Each sleeps until its next work is due or something wakes it."""
