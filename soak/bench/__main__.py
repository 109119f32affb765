"""`python -m soak.bench` (what `make bench` runs)."""

from soak.bench.cli import main

main()
