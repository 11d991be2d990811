"""`python -m mailstack_processor.webhooks`: run the webhook dispatcher."""

from mailstack_processor.webhooks.main import run

run()
