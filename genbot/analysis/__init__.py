"""Looking inside the networks: per-unit activations, feature discovery and pictures of them.

A layer beside ``engine/``: it reads models (``genbot.networks``) and never imports front ends.
Front ends call ``genbot.analysis.report.inspect_model`` (through ``GenbotService.inspect``).
"""
