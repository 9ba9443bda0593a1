"""The OpenAI Responses API (``/v1/responses``): Codex CLI and the OpenAI Agents SDK."""
