"""Test support for every suite: pytest fixtures that start stacks, waits, test receivers."""
