"""Upstream I/O: the providers (the pooled client, key pools, sending), the models catalog, diagnostics."""
