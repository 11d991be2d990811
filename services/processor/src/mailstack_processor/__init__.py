"""The mailstack email processor: consumes the queue and delivers through the providers."""
