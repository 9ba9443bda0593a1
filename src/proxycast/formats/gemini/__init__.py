"""The gemini wire format: see docs/architecture.md for what each module of a format holds."""
