"""The request path: the exchange (where a request meets an upstream), its attempts, the relay, routing."""
