"""``python -m parkwatch`` is the ``parkwatch`` console script."""

from parkwatch.cli import main

main()
