"""`python -m search.bench`: speed, memory and search efficiency as ratios of runs side by side
(the command: `cli.py`; one module per group of sections; `process.py` runs one measurement
in a fresh process, `rows.py` makes the record's rows)."""
