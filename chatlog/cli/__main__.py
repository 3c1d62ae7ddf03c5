"""``python -m chatlog.cli``: the same as the ``chatlog`` console script."""

from chatlog.cli import main

main()
