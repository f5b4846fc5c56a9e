"""``python -m genbot`` runs the same CLI as the ``genbot`` command."""

from genbot.frontends.cli import main

main()
