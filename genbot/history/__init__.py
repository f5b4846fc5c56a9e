"""The stored generations as a user's history: export formats, import, retention (the daily prune).

``formats`` renders rows (no database), ``transfer`` reads a JSON-lines export back in,
``retention`` prunes what is older than ``[storage] keep_days`` / beyond ``keep_rows``, and
``control`` is the service's facade (``service.archive``). Searching is the storage layer's
(``genbot.storage.search``), since it is SQL on each database.
"""
