-- Reserved while issue 13 is built on branches (replaced by the real migration).
SELECT 1;
