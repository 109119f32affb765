"""`python -m soak.cli`: the same as the `soak` console script."""

from soak.cli import main

main()
