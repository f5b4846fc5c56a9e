"""Storage: the database itself — engines and the ``Database`` handle, the tables, migrations.

* ``db`` — ``Database.open(url)``, SQLite's WAL/busy-timeout/``BEGIN IMMEDIATE`` setup;
  ``engines`` — the engine factory it and the migrations share;
* ``tables`` — every table (one ``Base.metadata`` for Alembic); ``migrate`` / ``schema`` —
  upgrading to head, and "is it at head?" without importing Alembic;
* ``repository`` — the generations log (one row per generation) and ``processes`` — the
  heartbeated serving processes that own running rows and quota slots.

Each other concern keeps its queries beside its rules: ``genbot.corpora.store``,
``genbot.versions.store``, ``genbot.quotas.store``, ``genbot.keys.store``, ``genbot.jobs.store``
and ``genbot.jobs.schedule_store``. Front ends never import any of these (they go through the
service). Nothing is re-exported here: import the module that holds a name.
"""
