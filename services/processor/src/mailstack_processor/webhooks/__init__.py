"""The webhook dispatcher: a process of its own that posts the webhook outbox's events, signed,
to the tenants' endpoints (`mailstack-dispatcher`, `python -m mailstack_processor.webhooks`)."""
