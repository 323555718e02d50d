"""The OpenAI-compatible HTTP server (`tinylm serve`) and its web chat page."""
