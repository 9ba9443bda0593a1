"""Inbound HTTP routes: every dialect's routes (``inbound``) and the model list (``models``)."""
