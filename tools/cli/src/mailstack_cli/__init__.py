"""`mailstack`: the gateway's API from a terminal, for senders and operators."""
