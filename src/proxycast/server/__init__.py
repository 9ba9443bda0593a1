"""Serving: the Quart-Trio application, the server loop and its workers, the client connections."""
