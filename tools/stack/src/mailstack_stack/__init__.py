"""The local stack launcher: make up / make down / make status, host or docker compose."""
