"""Pytest plugin with the fixtures that give tests a real Postgres, LocalStack and stack."""
