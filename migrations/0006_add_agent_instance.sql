-- The agent process (a random id it picks at start) whose session the row records:
-- a second process claiming a live agent's id is refused instead of taking over
-- its leases. Empty for agents that do not send one.

ALTER TABLE hydra_agents ADD COLUMN instance_id text NOT NULL DEFAULT '';
