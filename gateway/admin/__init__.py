"""The admin HTTP API: JWT-authenticated, scope-checked, every write audited."""
