"""Named presets of sampling settings: rules (``rules``), queries (``store``), the facade (``control``)."""
