"""The local stack launcher and the pytest fixtures that start it."""
