"""``python -m xenabi``: the ``xenabi`` command."""

from xenabi.cli import main

main()
