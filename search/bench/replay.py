"""`python -m search.bench replay`: the efficiency comparisons on every committed learning-curve
table (results/bench/curves/*.parquet), through the replay backend (search/engine/replay.py).

Each arm (random search with full-length trials, TPE alone, ASHA alone, TPE + ASHA) searches
each table `--seeds` times with the experiment's own budget (trials, ASHA's grace period and
reduction factor, TPE's start-up trials; epochs: the table's), `REPLAY_WORKERS` trials at a
time, through `search.run --replay` in one process per table (one Ray). A run's epochs are
ordered by the simulated clock (search.engine.replay.simulated_times). The rows name the table's
experiment; the surrogate's held-out error comes first.

`python -m search.bench collect` records the tables (`collect`, below; COLLECT_DOC).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from search.bench.efficiency import ARMS, arm_seed
from search.engine.curves import Recorded
from trainables.data.cache import cache_root
from trainables.errors import ConfigError
from trainables.progress import progress_line

COLLECT_DOC = """python -m search.bench collect EXPERIMENT --configs N [--set KEY=VALUE]: a
learning-curve table (search/engine/curves.py). N configurations drawn at random from the experiment's
space, each trained to full length on its demo data with every epoch recorded, by `search.run`
itself (Optuna's random sampler, no early stopping, the demo's budget) in chunks of 25, each a
run folder of its own under the cache (MEDTUNE_CACHE/curves/<table>-<hash of its path>/
<experiment>/chunk-<i>: two tables of one experiment, e.g. on two data sets, never share a
chunk): an interrupted collection continues where it stopped (the chunk in progress resumes through
`search.run --resume`), a larger --configs adds chunks (chunk i searches with seed --seed + i;
the chunks that the table at --out already holds are kept from it, so a committed table grows
without its run folders), and the table is rewritten after every chunk.

    python -m search.bench collect deepdrid_finetune --configs 250 --set image_size=96
    python -m search.bench collect medmnist --configs 250
    python -m search.bench collect deepdrid_finetune --configs 150 --set image_size=96 \\
        --set dataset=aptos --set data=APTOS_DEMO --out results/bench/curves/related/...
"""
CHUNK = 25  # configurations per search: what an interruption can cost at most

REPLAY_WORKERS = 4  # trials at a time, as on a 4-GPU machine
# replayed searches' seeds start here: far from the collector's (chunk i: seed i), so that no
# arm draws the recorded configurations themselves (a random sampler with a chunk's seed would
# replay its exact curves while every other arm gets the surrogate's)
REPLAY_SEED_BASE = 10_000


def replayed_search(experiment: str, table: str, results: str, name: str, seed: int,
                    *flags: str, quick: bool) -> Path:
    """One search replayed on `table` (quietly: a line per epoch and trial), with the
    experiment's budget (2 trials with `quick`: the plumbing), `REPLAY_WORKERS` trials at a time and seed
    REPLAY_SEED_BASE + `seed`; its run folder."""
    from search.bench.tune import _search

    with contextlib.redirect_stdout(io.StringIO()):
        _search([experiment, "--replay", table, "--results", results, "--name", name,
                 "--seed", str(REPLAY_SEED_BASE + seed), "--cpus-per-trial",
                 str(2 / REPLAY_WORKERS), "--max-concurrent", str(REPLAY_WORKERS), "--no-wandb",
                 *(["--num-samples", "2"] if quick else []), *flags])
    return Path(results) / experiment / name


def replay_run(run_dir: Path, metric: str) -> dict[str, Any]:
    """A replayed search's epochs in the order of the simulated clock."""
    from search.engine.replay import simulated_times

    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    epochs = epochs.assign(sim=simulated_times(epochs, REPLAY_WORKERS)).sort_values("sim")
    return {"values": [float(v) for v in epochs[metric]],
            "simulated_minutes": [float(t) / 60 for t in epochs["sim"]],
            "trials": int(epochs["trial_id"].nunique())}


def measure_replay(p: dict[str, Any]) -> dict[str, Any]:
    """Every arm and seed on one table, in this process (Ray started once)."""
    from search.bench.process import quiet_search_env
    from search.engine.curves import read_curves

    quiet_search_env(wandb=False)
    curves = read_curves(p["table"])
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as results:
        for seed in range(p["seeds"]):
            for arm in ARMS:
                sampler, scheduler = arm.split("-")
                run = replayed_search(p["table_experiment"], p["table"], results, f"{arm}-{seed}",
                                      arm_seed(arm, seed), "--sampler", sampler, "--scheduler",
                                      scheduler, quick=bool(p.get("quick")))
                runs[arm].append(replay_run(run, curves.metric))
    return {"runs": runs}


def tables(params: dict[str, Any], section: str) -> list[Path]:
    """The learning-curve tables a section replays (--tables, else the committed ones; the
    first only with --quick); none is one clear error."""
    from search.engine.curves import CURVES_DIR

    found = sorted(Path(t) for t in params.get("tables") or CURVES_DIR.glob("*.parquet"))
    if not found:
        raise ConfigError(f"{section}: no learning-curve table in results/bench/curves/ "
                          "(python -m search.bench collect EXPERIMENT --configs N writes one)")
    return found[:1] if params.get("quick") else found


def bench_replay(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    from search.bench.process import measure
    from search.bench.rows import value_row
    from search.bench.tune import efficiency_record
    from search.engine.curves import read_curves
    from search.engine.replay import held_out_error

    found = tables(params, "replay")
    rows: list[dict[str, Any]] = []
    for table in found:
        curves = read_curves(table)
        name, metric, mode = curves.meta["experiment"], curves.metric, curves.mode
        error = held_out_error(curves)
        error_rows = [
            value_row("replay", f"{name}: surrogate's held-out error of a configuration's best "
                                f"{metric} ({error['configs']} configurations; always the "
                                f"median: {error['mae_best_of_the_median']:.3f})",
                      error["mae_best"]),
            value_row("replay", f"{name}: rank correlation of held-out best values",
                      error["spearman_best"]),
        ]
        echo(f"  replay {name}: {params['replay_seeds']} seeds x {len(ARMS)} arms on {table}")
        runs = measure("replay", {**params, "table": str(table), "table_experiment": name,
                                  "seeds": params["replay_seeds"]})["runs"]
        table_rows = [*error_rows, *efficiency_record(
            params, "replay", runs, mode, metric, clock="simulated_minutes", label=name,
            best=curves.best(), title=f"{name}: {curves.meta['configs']} recorded configurations, "
                             "replayed")]
        rows += [{**r, "table": name} for r in table_rows]  # README: the newest per table
    return rows


# ---- collecting learning curves

def chunk_argv(experiment: str, root: Path, name: str, *, configs: int, seed: int,
               sets: list[str], resume: bool) -> list[str]:
    """`search.run` arguments of one chunk: random configurations, each trained whole."""
    if resume:  # the chunk's own settings are in its config.json
        return [experiment, "--results", str(root), "--name", name, "--resume", "--no-final"]
    return [experiment, "--demo", "--results", str(root), "--name", name, "--seed", str(seed),
            "--num-samples", str(configs), "--sampler", "random", "--scheduler", "fifo",
            "--cpus-per-trial", "1", "--no-final", "--no-wandb",
            *[arg for s in sets for arg in ("--set", s)]]


def collect(experiment: str, configs: int, *, sets: list[str], seed: int, out: Path,
            root: Path, chunk: int = CHUNK, echo: Any = print) -> Path:
    """Train `configs` random configurations of `experiment` (in chunks; finished chunks are
    kept, an unfinished one resumes, and chunks that the table at `out` already holds are
    taken from it, so that a table grows without its run folders) and write their curves to
    `out`."""
    from search.engine.curves import write_table
    from search.run import main as search_run
    from spaces import get_experiment

    exp = get_experiment(experiment)  # an unknown name: the known ones, before anything runs
    exp.demo_paths(cache_root(), {})  # the demo sets the chunks train on (made once)
    chunks = [(i, min(chunk, configs - i * chunk)) for i in range((configs + chunk - 1) // chunk)]
    recorded = held_chunks(out, experiment, sets=sets, seed=seed, chunk=chunk)
    held = recorded.held(chunks)
    names = [f"chunk-{i:03d}" for i, _ in chunks]
    folder = chunk_folder(root, out)
    # each chunk's rows: the table's where it holds them, else its run folder's
    sources = [name if name in held else folder / experiment / name for name in names]
    settings = {"seed": seed, "sets": sets, "chunk": chunk}
    command = _command(experiment, configs, sets, seed, chunk)
    to_train = [(i, n, name) for (i, n), name in zip(chunks, names, strict=True)
                if name not in held and not _finished(folder / experiment / name, n)]
    total, trained, started = sum(n for _, n, _ in to_train), 0, time.monotonic()
    for i, n, name in to_train:
        run_dir = folder / experiment / name
        resume = (run_dir / "config.json").is_file()
        echo(f"collect {experiment}: {'resuming ' if resume else ''}{name}, configurations "
             f"{i * chunk + 1}-{i * chunk + n} of {configs}")
        code = search_run(chunk_argv(experiment, folder, name, configs=n, seed=seed + i,
                                     sets=sets, resume=resume))
        if code not in (0, 1):  # 1: some trial failed (a NaN loss), which the table records
            raise ConfigError(f"collect {experiment}: {name} stopped (code {code}); run the "
                              "same command again to continue")
        table = write_table(experiment, sources[: i + 1], out, command=command,
                            settings=settings, recorded=recorded)
        trained += n
        echo(f"collect {experiment}: {out} holds the curves of {table.meta['configs']} "
             f"configurations ({len(table.meta['failed'])} failed)")
        echo(progress_line(f"collect {experiment}", trained, total, "configurations trained",
                           time.monotonic() - started))
    if not to_train and (not out.is_file() or len(held) < len(chunks)):
        # every chunk was finished before (in run folders, or some in the table)
        write_table(experiment, sources, out, command=command, settings=settings,
                    recorded=recorded)
    return out


def chunk_folder(root: Path, out: Path) -> Path:
    """Where the run folders of the table at `out` are trained: one folder per table."""
    where = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]
    return root / f"{out.stem}-{where}"


def held_chunks(out: Path, experiment: str, *, sets: list[str], seed: int,
                chunk: int) -> Recorded:
    """The table at `out`, whose chunks a collection with its settings, on its data, takes
    from it instead of training them again. A table recorded otherwise is left as it is (one
    clear error naming the difference): nothing already trained is overwritten."""
    from search.engine.curves import read_curves

    if not out.is_file():
        return Recorded(None)
    curves = read_curves(out)
    meta = curves.meta
    asked = {"experiment": experiment, "seed": seed, "sets": sets, "chunk": chunk}
    there = {"experiment": meta.get("experiment"), **_recorded_settings(meta)}
    differ = [f"{k} {there[k]!r} there, {asked[k]!r} asked" for k in asked if there[k] != asked[k]]
    if not _same_data(meta):
        differ.append(f"its data ({meta['fixed'].get('data')}) is not the data here")
    if differ:
        raise ConfigError(f"{out} holds curves collected otherwise ({'; '.join(differ)}): "
                          "collect into another --out, or move that table away")
    return Recorded(curves)


def _same_data(meta: dict[str, Any]) -> bool:
    """The table's configurations were trained on the data this collection trains on: the
    same fingerprint, or the same generated demo set (search.engine.curves.demo_set)."""
    from search.engine.curves import data_fingerprint, demo_set

    recorded = meta.get("data_fingerprint")
    if recorded is not None and data_fingerprint(meta["fixed"]) == recorded:
        return True
    name = demo_set(meta["fixed"].get("data"))
    return name is not None and (cache_root() / "demo" / name).is_dir()


def _recorded_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """The seed, --set values and chunk size a table was collected with (tables written before
    they were in the metadata: from its command)."""
    if "settings" in meta:
        return dict(meta["settings"])
    words = shlex.split(meta.get("command", ""))
    value = {words[k]: words[k + 1] for k in range(len(words) - 1)}
    sets = [words[k + 1] for k in range(len(words) - 1) if words[k] == "--set"]
    return {"seed": int(value.get("--seed", 0)), "sets": sets,
            "chunk": int(value.get("--chunk", CHUNK))}


def _command(experiment: str, configs: int, sets: list[str], seed: int, chunk: int) -> str:
    return shlex.join(["python", "-m", "search.bench", "collect", experiment, "--configs",
                       str(configs), "--seed", str(seed),
                       *(["--chunk", str(chunk)] if chunk != CHUNK else []),
                       *[arg for s in sets for arg in ("--set", s)]])


def _finished(run_dir: Path, n: int) -> bool:
    trials = run_dir / "trials.parquet"
    if not trials.is_file():
        return False
    status = pd.read_parquet(trials, columns=["status"])["status"]
    return int(status.isin(["completed", "failed"]).sum()) >= n


def collect_main(argv: list[str]) -> int:
    """`python -m search.bench collect EXPERIMENT --configs N`: a learning-curve table."""
    from search.bench.process import quiet_search_env
    from search.cli import positive_int
    from search.engine.curves import CURVES_DIR

    p = argparse.ArgumentParser(prog="python -m search.bench collect", description=COLLECT_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="see python -m search.list")
    p.add_argument("--configs", type=positive_int, required=True,
                   help="configurations drawn from the space, each trained to full length")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (chunk i: seed + i)")
    p.add_argument("--chunk", type=positive_int, default=CHUNK,
                   help=f"configurations per search (default {CHUNK}): what an interruption "
                        "costs at most")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a fixed config value of every configuration (e.g. image_size=96)")
    p.add_argument("--out", type=Path, help="the table (default results/bench/curves/"
                                            "<experiment>.parquet)")
    args = p.parse_args(argv)
    quiet_search_env(wandb=False)
    out = args.out or CURVES_DIR / f"{args.experiment}.parquet"
    collect(args.experiment, args.configs, sets=args.sets, seed=args.seed, out=out,
            root=cache_root() / "curves", chunk=args.chunk, echo=lambda line: print(line, flush=True))
    print(f"written to {out}")
    return 0


def describe(table: Path) -> list[str]:
    """What `python -m search.bench curves` prints of one table: its size, the surrogate's
    held-out error, and how much the choice matters (search.engine.replay.landscape)."""
    from search.engine.curves import read_curves
    from search.engine.replay import held_out_error, landscape

    curves = read_curves(table)
    error, land = held_out_error(curves), landscape(curves)
    spread = ", ".join(f"{q}%: {v:.3f}" for q, v in land["last_percentiles"].items())
    ranks = ", ".join(f"{e}: {r:.2f}" for e, r in enumerate(land["rank_by_epoch"], start=1))
    return [f"{table}: {curves.meta['experiment']}, {land['configs']} configurations of "
            f"{curves.epochs} epochs, {curves.metric} ({curves.mode})",
            f"  last epoch's {curves.metric}, percentiles over configurations: {spread}; "
            f"best recorded {land['best']:.3f}",
            f"  rank correlation of an epoch's value with the configuration's best: {ranks}",
            f"  surrogate's held-out error of the best: {error['mae_best']:.3f} (always the "
            f"median: {error['mae_best_of_the_median']:.3f}), rank correlation "
            f"{error['spearman_best']:.2f}"]


def curves_main(argv: list[str]) -> int:
    """`python -m search.bench curves [TABLE ...]`: describe learning-curve tables."""
    from search.engine.curves import CURVES_DIR

    p = argparse.ArgumentParser(prog="python -m search.bench curves",
                                description="describe learning-curve tables: their size, how "
                                            "much the choice matters, the surrogate's error")
    p.add_argument("tables", nargs="*", type=Path,
                   help="learning-curve tables (default: results/bench/curves/*.parquet and "
                        "related/*.parquet there)")
    args = p.parse_args(argv)
    for table in args.tables or [*sorted(CURVES_DIR.glob("*.parquet")),
                                 *sorted(CURVES_DIR.glob("related/*.parquet"))]:
        print("\n".join(describe(table)))
    return 0
