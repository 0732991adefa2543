"""APIs other speech services made popular, served from the same canonical result and billed
the same way as the OpenAI-compatible endpoint."""
