"""Inbound HTTP APIs, one module per client dialect."""
