"""``python -m kgcode`` runs the command line."""

from kgcode.cli import main

main()
