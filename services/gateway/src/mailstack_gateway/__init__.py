"""The mailstack email gateway: accepts emails over HTTP and hands them to the queue."""
