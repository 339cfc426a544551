"""mlpjax's benchmarks: scripts that print a table, write JSON to ``benchmarks/results/`` and append
a dated section to ``benchmarks/RESULTS.md``; ``python -m benchmarks.run`` runs them as suites."""
