"""Per-user/guild/key quotas: ``policy`` (limits, admission, cooldowns) and ``store`` (limits, usage and slot rows)."""
