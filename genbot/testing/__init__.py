"""Shipped fakes for tests of genbot and of code built on it (benchmarks live in ``bench/``).

* ``fakes`` — generators with known output: ``scripted_model(text)``, ``tiny_charrnn(chars)``,
  ``RecordingModel`` (records batch sizes and threads, slows or fails on demand), ``loaded_generator``.
* ``fake_discord`` — a fake Discord (gateway websocket + REST) on loopback for the real discord.py
  client.
"""

from genbot.testing.fakes import RecordingModel, ScriptedModel, loaded_generator, scripted_model, tiny_charrnn

__all__ = ["RecordingModel", "ScriptedModel", "loaded_generator", "scripted_model", "tiny_charrnn"]
