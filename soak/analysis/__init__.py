"""Statistics and verdicts on stored samples: ``trend`` (numpy-only robust trend statistics) and
``verdict`` (rules -> findings). Never imports triton, psutil or pynvml."""
