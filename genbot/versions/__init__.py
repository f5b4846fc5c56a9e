"""Model versions: ``watcher`` (activation policy, bundled version 1, live pickup), ``store``, ``control``.

``store`` holds the rows; ``control.Versions`` is what the service offers (``service.versions``).
"""
