"""``python -m debtor_segments.agents`` runs the CLI (same as the ``debtor-segments`` script)."""

from debtor_segments.agents.cli import main

main()
