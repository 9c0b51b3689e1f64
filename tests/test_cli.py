"""Every numeric flag of every CLI refuses zero, negatives and junk with one line naming the
flag (argparse's usage error, exit 2), before anything runs; other inputs that slipped through;
and what a search's driver imports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from search import data, final, reproduce, train
from search import run as run_cli
from search.bench import cli as bench
from tests.helpers import without_packages
from trainables.errors import ConfigError
from trainables.train.config import TrainConfig

CASES = [
    (run_cli.main, ["deepdrid_finetune", "--demo", "--num-samples", "0"], "--num-samples", "0 must be > 0"),
    (run_cli.main, ["deepdrid_finetune", "--demo", "--num-samples", "-3"], "--num-samples", "must be > 0"),
    (run_cli.main, ["deepdrid_finetune", "--demo", "--num-samples", "two"], "--num-samples",
     "'two' is not a whole number"),
    (run_cli.main, ["deepdrid_finetune", "--demo", "--max-epochs", "0"], "--max-epochs", "must be > 0"),
    (run_cli.main, ["deepdrid_finetune", "--demo", "--max-epochs", "1.5"], "--max-epochs",
     "not a whole number"),
    (run_cli.main, ["deepdrid_finetune", "--demo", "--seed", "-1"], "--seed", "must be >= 0"),
    (run_cli.main, ["deepdrid_finetune", "--demo", "--cpus-per-trial", "0"], "--cpus-per-trial",
     "must be > 0"),
    (run_cli.main, ["deepdrid_finetune", "--demo", "--cpus-per-trial", "1.5"], "--cpus-per-trial",
     "above 1 use a whole number"),
    (run_cli.main, ["deepdrid_finetune", "--demo", "--gpus-per-trial", "-0.5"], "--gpus-per-trial",
     "must be >= 0"),
    (run_cli.main, ["deepdrid_finetune", "--demo", "--gpus-per-trial", "nan"], "--gpus-per-trial",
     "not a finite number"),
    (run_cli.main, ["deepdrid_finetune", "--demo", "--max-concurrent", "0"], "--max-concurrent",
     "must be > 0"),
    (run_cli.main, ["deepdrid_finetune", "--demo", "--placement-timeout", "0"],
     "--placement-timeout", "must be > 0"),
    (final.main, ["RUN", "--top-k", "0"], "--top-k", "must be > 0"),
    (reproduce.main, ["RECORD", "--rank", "0"], "--rank", "must be > 0"),
    (reproduce.main, ["RECORD", "--tolerance", "-0.1"], "--tolerance", "must be >= 0"),
    (train.main, ["deepdrid_finetune", "--demo", "--epochs", "0"], "--epochs", "must be > 0"),
    (data.main, ["demo", "deepdrid_finetune", "--out", "x", "--seed", "-2"], "--seed", ">= 0"),
    (data.main, ["demo", "deepdrid_finetune", "--out", "x", "--patients", "4", "0", "2"],
     "--patients", "must be > 0"),
    (bench.main, ["--repeats", "0"], "--repeats", "must be > 0"),
    (bench.main, ["--workers", "-1"], "--workers", "must be > 0"),
]


@pytest.mark.parametrize("main,argv,flag,message", CASES,
                         ids=[f"{c[0].__module__} {' '.join(c[1][-2:])}" for c in CASES])
def test_numeric_flags_refuse_bad_values(main: object, argv: list[str], flag: str, message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)  # type: ignore[operator]
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and message in err, err
    assert "Traceback" not in err


def test_a_bad_flag_through_the_real_command_is_one_line_without_traceback() -> None:
    result = subprocess.run([sys.executable, "-m", "search.run", "deepdrid_finetune", "--demo",
                             "--num-samples", "0"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "python -m search.run: error: argument --num-samples: 0 must be > 0")


def test_a_command_needing_a_package_this_machine_lacks_says_so_in_one_line(
        tmp_path: Path) -> None:
    """A bare GPU box has torch and timm but not Ray or Optuna: the commands that need them
    name what is missing and how to install it; search.train does not need them."""
    bare = without_packages(tmp_path, "ray", "optuna", "wandb")
    result = subprocess.run([sys.executable, "-m", "search.run", "deepdrid_finetune", "--demo"],
                            capture_output=True, text=True, env=bare)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: python -m search.run needs Ray Tune (searches, the final step, the cluster), and "
        "`import ray` fails here (No module named 'ray'): `pip install -e .` installs it, or pip "
        "install 'ray[tune,client]>=2.60,<3'"]
    result = subprocess.run([sys.executable, "-m", "search.train", "--help"],
                            capture_output=True, text=True, env=bare)
    assert result.returncode == 0 and "search.train" in result.stdout


def test_results_pointing_at_a_file_is_one_clear_error(course_demo: Path, tmp_path: Path) -> None:
    plain = tmp_path / "results.txt"
    plain.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"--results .*results.txt: .*results.txt is a file, not "
                                          "a folder"):
        run_cli.main(["deepdrid_finetune", "--data", str(course_demo), "--results", str(plain)])
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "deepdrid_finetune").write_text("")  # the experiment's folder a file
    with pytest.raises(ConfigError, match="deepdrid_finetune is a file, not a folder"):
        run_cli.main(["deepdrid_finetune", "--data", str(course_demo), "--results",
                      str(tmp_path / "res")])
    with pytest.raises(ConfigError, match=r"results\.txt is a file: give a run folder"):
        final.main([str(plain)])
    result = subprocess.run([sys.executable, "-m", "search.run", "deepdrid_finetune", "--data",
                             str(course_demo), "--results", str(plain)], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is a file, not a folder" in result.stderr


def test_every_command_that_reads_a_run_folder_names_a_missing_empty_or_foreign_one(
        tmp_path: Path) -> None:
    """search.final, --resume and --warm-start: one line naming the folder and what is wrong,
    no traceback, nothing written."""
    from search.engine.warmstart import read_earlier

    results = tmp_path / "results" / "deepdrid_finetune"
    empty, foreign, broken = (results / n for n in ("empty", "foreign", "broken"))
    for folder in (empty, foreign, broken):
        folder.mkdir(parents=True)
    # a trial's record (best/config.json), not a search's config
    (foreign / "config.json").write_text('{"trial_id": "a1", "config": {"lr": 0.001}}')
    (broken / "config.json").write_text('{"experiment": "deepdrid_fine')
    said = {results / "missing": "does not exist",
            empty: "is not a run folder of python -m search.run (no config.json)",
            foreign: "config.json is not a search's config (no experiment, run_id, settings)",
            broken: "config.json is not JSON"}
    for folder, what in said.items():
        with pytest.raises(ConfigError) as e:
            final.main([str(folder)])
        assert str(e.value).startswith(f"search.final: {folder}") and what in str(e.value)
        with pytest.raises(ConfigError) as e:
            run_cli.main(["deepdrid_finetune", "--results", str(tmp_path / "results"),
                          "--name", folder.name, "--resume"])
        assert str(e.value).startswith(f"--resume: {folder}") and what in str(e.value)
        with pytest.raises(ConfigError) as e:
            read_earlier(str(folder))
        assert str(e.value).startswith(f"--warm-start: {folder}") and what in str(e.value)
    assert sorted(p.name for p in results.iterdir()) == ["broken", "empty", "foreign"]
    assert not list(empty.iterdir())
    result = subprocess.run([sys.executable, "-m", "search.final", str(empty)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: search.final: {empty} {said[empty]}"


def test_search_reproduce_names_a_record_that_is_missing_a_folder_or_not_json(
        tmp_path: Path) -> None:
    expected = "(expected RUN/best/config.json or top_k.json)"
    records = {tmp_path / "missing.json": f"not found {expected}",
               tmp_path / "run": f"is a folder, not a trial's record {expected}",
               tmp_path / "empty.json": "is not JSON (Expecting value: line 1 column 1",
               tmp_path / "cut.json": "is not JSON (Unterminated string",
               tmp_path / "numbers.json": f"is not a search record {expected}",
               tmp_path / "search.json": "is not a search record: missing config, epoch, metric"}
    (tmp_path / "run").mkdir()
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "cut.json").write_text('{"experiment": "deepdrid_fine')
    (tmp_path / "numbers.json").write_text("[1, 2]")
    (tmp_path / "search.json").write_text('{"experiment": "deepdrid_finetune", "run_id": "x"}')
    for record, what in records.items():
        with pytest.raises(ConfigError) as e:
            reproduce.main([str(record)])
        assert str(e.value).startswith(f"{record} {what}"), str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in records
                                                                 if p.name != "missing.json")


def test_epochs_that_disagree_with_phases_of_given_lengths_are_an_error(course_demo: Path,
                                                                       tmp_path: Path) -> None:
    """Phases that each give their length set a trial's epochs: an explicit count that
    disagrees was overruled without a word (10 epochs trained for --epochs 2)."""
    phases = '[{"name": "a", "epochs": 5}, {"name": "b", "epochs": 5}]'
    said = "disagrees with the phases' 10 epochs (a 5, b 5): give one of them"
    with pytest.raises(ConfigError, match=r"^--epochs 2 " + re.escape(said)):
        train.main(["deepdrid_finetune", "--data", str(course_demo), "--epochs", "2",
                    "--set", f"phases={phases}", "--out", str(tmp_path / "t")])
    with pytest.raises(ConfigError, match=r"^--set epochs= 2 " + re.escape(said)):
        train.main(["deepdrid_finetune", "--data", str(course_demo), "--set", "epochs=2",
                    "--set", f"phases={phases}", "--out", str(tmp_path / "t")])
    with pytest.raises(ConfigError, match=r"^--max-epochs 3 " + re.escape(said)):
        run_cli.main(["deepdrid_finetune", "--data", str(course_demo), "--max-epochs", "3",
                      "--set", f"phases={phases}", "--results", str(tmp_path / "r")])
    assert not (tmp_path / "t").exists() and not (tmp_path / "r").exists()
    # the last phase without a length takes the rest: they agree
    cfg = TrainConfig(epochs=7, phases=({"name": "a", "epochs": 5}, {"name": "b"}))
    cfg.require_epochs(7, "--epochs")
    assert [p.epochs for p in cfg.phase_plan()] == [5, 2]


def test_a_searchs_driver_imports_neither_torch_nor_timm_and_a_trial_not_wandb(
        course_demo: Path, tmp_path: Path) -> None:
    """The driver checks and caches the data, writes environment.json and hands Ray Tune the
    trainable; only a worker that trains imports torch and timm (seconds on a CPU)."""
    code = (
        "import sys\n"
        "from search.engine.environment import describe\n"
        "from spaces import get_experiment\n"
        "from trainables.data.trial_data import load_data, resolve_data\n"
        "experiment = get_experiment('deepdrid_finetune')\n"
        f"cfg = experiment.config(demo=True, overrides={{'data': {str(course_demo)!r}, "
        f"'cache_dir': {str(tmp_path)!r}, 'image_size': 64}})\n"
        "data = load_data(resolve_data(cfg)[0])\n"
        "env = describe()\n"
        "trainable = experiment.trainable()\n"
        "print(trainable.__module__, len(data.images['train']), env['cuda'],"
        " sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))\n"
        # a trial's process: timm without the wandb import of timm's own training logger
        "import trainables.train.trainable\n"
        "print('timm' in sys.modules, 'wandb' in sys.modules)\n"
        "import wandb\n"  # and wandb as usual where it is wanted
        "print(callable(wandb.init))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import torch

    assert done.stdout.split() == ["trainables.train.tune_entry", "24", str(torch.version.cuda), "[]",
                                   "True", "False", "True"]


def test_the_run_spec_reads_back_what_it_wrote_and_refuses_unknown_or_missing_settings(
        tmp_path: Path) -> None:
    import json

    from search.engine.spec import RunSpec
    from spaces import get_experiment

    spec = run_cli.resolve(run_cli.parse_args(
        ["deepdrid_finetune", "--demo", "--num-samples", "3", "--seed", "5", "--top-k", "2",
         "--set", "lr=0.01"]), get_experiment("deepdrid_finetune"))
    assert (spec.num_samples, spec.seed, spec.top_k, spec.pinned) == (3, 5, 2, {"lr": 0.01})
    written = json.loads(json.dumps(spec.to_dict()))  # as config.json holds it
    back = RunSpec.from_dict(written)
    assert back.to_dict() == written and back.replace(fixed=spec.fixed) == spec
    # an older medtune's settings, before these keys existed: read with their defaults
    newer = ("sampler", "scheduler", "batch", "objectives", "warm_start", "placement_timeout",
             "classes", "replay")
    older = RunSpec.from_dict({k: v for k, v in written.items() if k not in newer})
    assert (older.sampler, older.scheduler, older.objectives, older.placement_timeout) == (
        "tpe", "asha", [], 15.0)
    with pytest.raises(ConfigError, match=r"^x: missing setting\(s\) max_epochs$"):
        RunSpec.from_dict({k: v for k, v in written.items() if k != "max_epochs"}, "x")
    # a typo in a hand-edited config.json: --resume names the file and the key, nothing runs
    run = tmp_path / "deepdrid_finetune" / "typo"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"experiment": "deepdrid_finetune",
                                                 "run_id": "typo",
                                                 "settings": {**written, "sampeler": "tpe"}}))
    with pytest.raises(ConfigError) as e:
        run_cli.main(["deepdrid_finetune", "--results", str(tmp_path), "--name", "typo",
                      "--resume"])
    assert str(e.value).startswith(f"--resume: {run}/config.json: unknown setting(s) sampeler; "
                                   "known: fixed, pinned, demo,")
