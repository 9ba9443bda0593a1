"""Google Vertex AI: Gemini and Claude in a Google Cloud project (upstream role only)."""
