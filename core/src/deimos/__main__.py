"""``python -m deimos`` runs the command line."""

from deimos.cli import main

main()
