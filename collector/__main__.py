"""``python -m collector`` is the ``parkwatch`` console script."""

from collector.cli import main

main()
