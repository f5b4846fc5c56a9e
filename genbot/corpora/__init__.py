"""Corpora for fine-tuning: ``files`` (validate, stage, copy into the data folder, remove), ``store`` (rows)."""
