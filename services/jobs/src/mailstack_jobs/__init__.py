"""Scheduled jobs of mailstack: retention cleanup (archive, then delete) and retry of failures."""
