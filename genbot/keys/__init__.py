"""HTTP API keys: ``store`` (stored hashed, shown once) and ``control.Keys`` (``service.keys``)."""
