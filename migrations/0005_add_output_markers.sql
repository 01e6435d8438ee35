-- A row of hydra_attempt_output whose dropped_bytes is not zero is a marker, not
-- output: that many bytes of its stream were dropped there, between the head kept
-- while the attempt ran and the tail its agent sent with the attempt's end (its
-- data is empty). A constant default: no table rewrite.
ALTER TABLE hydra_attempt_output ADD COLUMN dropped_bytes bigint NOT NULL DEFAULT 0;
