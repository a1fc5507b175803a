"""``python -m corral.cli``: the same as the ``corral`` command."""

from corral.cli.entry import main

main()
