"""`monitor`: run `check` on one's own domains on a schedule, remember the findings, and tell
the operator only about transitions (new, resolved, changed severity)."""
