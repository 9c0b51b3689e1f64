"""A search's console: Ray's own output (its Python loggers and anything written to the
process's stderr, as its C++ core worker does) goes to the run's search.log, medtune's lines
stay on the console; --verbose shows Ray's too."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import logging, os, sys
    from pathlib import Path
    from search.cli import setup_logging
    from search.engine.console import ray_output_to
    setup_logging()
    with ray_output_to(Path(sys.argv[1]), verbose=sys.argv[2] == "1"):
        import ray.tune  # Ray's loggers and their console handlers, as in a search
        logging.getLogger("ray.tune.execution").warning("callbacks.on_trial_result took 1.4 s")
        os.write(2, b"[core_worker.cc:123] an actor ended\\n")  # below Python, as C++ writes
        logging.getLogger("search.engine.progress").warning("medtune: a trial waits")
        print("trial 1 epoch 1", flush=True)
    print("error: after the search", file=sys.stderr)
""")


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_rays_output_goes_to_the_run_log_and_medtunes_to_the_console(tmp_path: Path,
                                                                     verbose: bool) -> None:
    log = tmp_path / "run" / "search.log"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log), "1" if verbose else "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kept = log.read_text()
    assert "callbacks.on_trial_result took 1.4 s" in kept
    assert "medtune: a trial waits" in done.stderr and "medtune: a trial waits" not in kept
    assert "error: after the search" in done.stderr and "trial 1 epoch 1" in done.stdout
    if verbose:
        assert "callbacks.on_trial_result" in done.stderr and "core_worker.cc" in done.stderr
    else:
        assert "core_worker.cc:123" in kept
        assert "callbacks.on_trial_result" not in done.stderr and "core_worker" not in done.stderr
