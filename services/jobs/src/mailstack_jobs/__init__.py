"""Scheduled jobs of mailstack: retention cleanup (archive, then delete) and the retry of failed emails."""
