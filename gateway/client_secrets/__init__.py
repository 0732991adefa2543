"""Client tokens for browser WebSockets: minted with an API key, presented once in its place."""
