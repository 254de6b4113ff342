"""``python -m evstream`` runs the CLI."""

from evstream.cli import main

main()
