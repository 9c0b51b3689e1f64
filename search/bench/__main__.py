from search.bench.cli import main
from search.cli import run

run(main)
