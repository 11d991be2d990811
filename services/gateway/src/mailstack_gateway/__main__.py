"""`python -m mailstack_gateway`: run the gateway with settings from the environment."""

from mailstack_gateway.main import run

run()
