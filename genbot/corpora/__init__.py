"""Corpora for fine-tuning: ``files`` (validate, stage, copy, remove), ``store`` (rows), ``control`` (the facade)."""
