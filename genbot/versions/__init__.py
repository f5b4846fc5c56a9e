"""Model versions: ``watcher`` (activation policy, rollback, bundled version 1, live pickup), ``store`` (rows)."""
