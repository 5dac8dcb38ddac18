"""schemathesis hooks for convo (see schemathesis.toml for why each exists)."""
