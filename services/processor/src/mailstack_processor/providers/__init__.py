"""Provider adapters: each turns an OutgoingEmail into one HTTP call and its outcome."""
