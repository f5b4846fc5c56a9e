"""Model versions: ``watcher`` (activation policy, bundled version 1, live pickup), ``store``, ``control``,
``own`` (models of your own: add a trained folder, remove it, export any version as a plugin).

``store`` holds the rows; ``control.Versions`` is what the service offers (``service.versions``).
"""
