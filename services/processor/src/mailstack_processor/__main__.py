"""`python -m mailstack_processor`: run the processor with settings from the environment."""

from mailstack_processor.main import run

run()
