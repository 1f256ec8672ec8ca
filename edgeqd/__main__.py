"""``python -m edgeqd``: the same as the ``edgeqd`` command."""

from edgeqd.cli import main

main()
