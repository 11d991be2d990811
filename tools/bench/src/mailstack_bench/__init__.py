"""make bench: load with wrk against a private stack, with same-run baselines."""
