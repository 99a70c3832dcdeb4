"""``python -m agents`` runs the CLI (same as the ``debtor-segments`` script)."""

from agents.cli import main

main()
