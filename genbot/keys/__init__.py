"""HTTP API keys: ``store`` creates, finds, lists and revokes them (stored hashed, shown once)."""
