"""``python -m corral``: the same as the ``corral`` command."""

from corral.cli.entry import main

main()
