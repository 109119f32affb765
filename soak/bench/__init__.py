"""`make bench`: soak's own speed and footprint (``python -m soak.bench``).

:mod:`~soak.bench.measure` takes the measurements, :mod:`~soak.bench.attribution` what
`--attribute` costs, :mod:`~soak.bench.analysis` builds the synthetic runs and power
experiments of the analysis benchmarks, :mod:`~soak.bench.cli` prints the table and writes
results/bench.json.
"""
