"""Where a run folder lives: a directory, or an object-store URI with a local stage.

`--results` takes a directory (local, or shared by every node: NFS, EFS) or a URI that
pyarrow's file systems open (`s3://bucket/medtune`, `gs://...`, `file:///...`). With a URI:

- Ray Tune writes `tune/` (trial checkpoints, the experiment state) straight to
  URI/<experiment>/<run-id>/tune, from every node;
- medtune's own files (config.json, environment.json, study.db, the tables, best/, final/,
  submission/, report/, wandb/) are written to a local stage, MEDTUNE_CACHE/runs/<experiment>/
  <run-id>, and copied to the URI after each step (the start, the search, the final step);
- unless MEDTUNE_STUDY_URL names a database, the Optuna study is the stage's SQLite file, and
  a snapshot of it is saved with every Ray Tune experiment checkpoint (tune/study.db), so a
  resume on another machine gets the study exactly as the restored searcher last saw it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.data.cache import cache_root
from trainables.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

TUNE_FOLDER, STUDY_FILE, CONFIG_FILE = "tune", "study.db", "config.json"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(location: str | os.PathLike[str]) -> bool:
    return bool(_SCHEME.match(str(location)))


def read_json(path: Path, named: str, hint: str = "") -> Any:
    """`path`'s JSON; a file that is not JSON is one ConfigError, "NAMED is not JSON (why HINT)"."""
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise ConfigError(f"{named} is not JSON ({e}{hint})") from None


def stage_root() -> Path:
    return cache_root() / "runs"


def _filesystem(uri: str):  # -> tuple[pyarrow.fs.FileSystem, str]
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise ConfigError(f"{uri}: not a storage URI pyarrow can open ({e})") from None


_REFUSED = re.compile(r"AWS Error (SIGNATURE_DOES_NOT_MATCH|INVALID_ACCESS_KEY_ID|ACCESS_DENIED"
                      r"|INVALID_TOKEN|EXPIRED_TOKEN)")
_NO_BUCKET = re.compile(r"Bucket '([^']+)' not found")


def _why(error: OSError) -> str:
    """What a store's error means, in words, for the errors a user can fix (the credentials, a
    bucket that does not exist); anything else as the store said it."""
    if refused := _REFUSED.search(str(error)):
        return (f"the store refused this machine's credentials ({refused[1]}): check "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the node's role) and the "
                "bucket's policy")
    if bucket := _NO_BUCKET.search(str(error)):
        return f"the bucket {bucket[1]!r} does not exist: create it first (aws s3 mb s3://{bucket[1]})"
    return str(error)


@contextmanager
def _reaching(what: str, uri: str, kept: Path | None = None) -> Iterator[None]:
    """An OSError of the store (no bucket, no credentials, no network) as one clear line."""
    try:
        yield
    except OSError as e:
        note = f"; this run's files are kept in {kept}" if kept and kept.exists() else ""
        raise StorageError(f"cannot {what} {uri}: {_why(e)}{note}") from None


@dataclass(frozen=True)
class RunStore:
    """One run folder: `local` is where its files are written and read; `uri`, when set, is
    where they are kept (and `local` is only a stage)."""

    local: Path
    uri: str | None = None

    @classmethod
    def at(cls, results: str, experiment: str, run_id: str) -> RunStore:
        if not is_uri(results):
            run_dir = Path(results) / experiment / run_id
            for folder in (Path(results), run_dir.parent, run_dir):
                if folder.exists() and not folder.is_dir():
                    raise ConfigError(f"--results {results}: {folder} is a file, not a folder; "
                                      "give --results a folder (or a URI such as s3://...)")
            return cls(run_dir)
        _filesystem(results)  # a bad URI fails here, before Ray starts
        return cls(stage_root() / experiment / run_id, f"{results.rstrip('/')}/{experiment}/{run_id}")

    @classmethod
    def of(cls, location: str | os.PathLike[str]) -> RunStore:
        """The run folder at a path or URI (RESULTS/<experiment>/<run-id>)."""
        text = str(location).rstrip("/")
        if not is_uri(text):
            if Path(text).exists() and not Path(text).is_dir():
                raise ConfigError(f"{text} is a file: give a run folder (RESULTS/<experiment>/"
                                  "<run-id>)")
            return cls(Path(text))
        parent, run_id = text.rsplit("/", 1)
        experiment = parent.rsplit("/", 1)[-1]
        return cls(stage_root() / experiment / run_id, text)

    @property
    def run_id(self) -> str:
        return self.local.name

    @property
    def location(self) -> str:
        """What a user passes back to a command: the URI, or the folder."""
        return self.uri or str(self.local)

    @property
    def results(self) -> str:
        """The --results this run was made with."""
        return self.location.rsplit("/", 2)[0] if self.uri else str(self.local.parent.parent)

    @property
    def tune_storage(self) -> str:
        """Ray Tune's `storage_path`: the run folder itself (tune/ goes inside it)."""
        return self.uri or str(self.local.resolve())

    def run_config(self, command: str) -> dict[str, Any]:
        """The run's config.json (after `pull`): a missing, empty or foreign folder, or a file
        that is not a search's config, is one clear error naming the folder."""
        path = self.local / CONFIG_FILE
        if not path.is_file():
            what = ("does not exist" if not self.local.exists() and self.uri is None
                    else f"is not a run folder of python -m search.run (no {CONFIG_FILE})")
            raise ConfigError(f"{command}: {self.location} {what}")
        config = read_json(path, f"{command}: {self.location}/{CONFIG_FILE}")
        missing = [k for k in ("experiment", "run_id", "settings") if not isinstance(config, dict)
                   or k not in config]
        if missing:
            raise ConfigError(f"{command}: {self.location}/{CONFIG_FILE} is not a search's config "
                              f"(no {', '.join(missing)}); give the run folder, "
                              "RESULTS/<experiment>/<run-id>")
        return config

    def exists(self) -> bool:
        if self.uri is None:
            return self.local.exists()
        import pyarrow.fs as pafs

        fs, path = _filesystem(self.uri)
        with _reaching("read", self.uri):
            return fs.get_file_info(path).type != pafs.FileType.NotFound

    def pull(self) -> None:
        """Copy the run folder's own files (not tune/) from the URI into the stage, and the
        study snapshot saved with Ray's last experiment checkpoint, if any, as study.db."""
        if self.uri is None:
            return
        fs, path = _filesystem(self.uri)
        with _reaching("read", self.uri):
            self._pull(fs, path)
        log.info("pulled %s into %s", self.uri, self.local)

    def _pull(self, fs: Any, path: str) -> None:
        import pyarrow.fs as pafs

        entries = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        if not any(e.base_name == CONFIG_FILE for e in entries):
            raise ConfigError(f"{self.uri}: no run folder there ({CONFIG_FILE} missing)")
        self.local.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            if entry.base_name == TUNE_FOLDER:
                continue
            target = self.local / entry.base_name
            if entry.type == pafs.FileType.Directory:
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
            pafs.copy_files(entry.path, str(target), source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())
        snapshot = f"{path}/{TUNE_FOLDER}/{STUDY_FILE}"
        if fs.get_file_info(snapshot).type == pafs.FileType.File:
            pafs.copy_files(snapshot, str(self.local / STUDY_FILE), source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())

    def push(self, *names: str) -> None:
        """Copy the stage's files (all but tune/, or only `names`) to the URI."""
        if self.uri is None:
            return
        import pyarrow.fs as pafs

        fs, path = _filesystem(self.uri)
        local = pafs.LocalFileSystem()
        with _reaching("write", self.uri, kept=self.local):
            fs.create_dir(path, recursive=True)  # a no-op on object stores; needed by file://
            for entry in sorted(self.local.iterdir()):
                if entry.name == TUNE_FOLDER or (names and entry.name not in names):
                    continue
                target = f"{path}/{entry.name}"
                if entry.is_dir():
                    fs.create_dir(target)
                pafs.copy_files(str(entry), target, source_filesystem=local,
                                destination_filesystem=fs)
        log.info("pushed %s to %s", self.local, self.uri)

    def _kept_at(self) -> tuple[Any, str]:
        """(file system, path) where the run folder is kept: its URI, else its folder."""
        import pyarrow.fs as pafs

        if self.uri is None:
            return pafs.LocalFileSystem(), str(self.local.resolve())
        return _filesystem(self.uri)

    def probe(self) -> None:
        """Write and delete a small file where the run folder is kept: a StorageError naming
        the store when that fails (gone, full, read-only)."""
        fs, path = self._kept_at()
        with _reaching("write", self.uri or str(self.local), kept=self.local if self.uri else None):
            fs.create_dir(path, recursive=True)
            with fs.open_output_stream(f"{path}/.medtune-probe") as f:
                f.write(b"probe")
            fs.delete_file(f"{path}/.medtune-probe")

    def sizes(self) -> dict[str, int]:
        """Bytes under each top-level entry of the run folder (where it is kept: the URI's
        copy, tune/ included, for an object store)."""
        import pyarrow.fs as pafs

        fs, root = self._kept_at()
        with _reaching("read", self.uri or str(self.local)):
            entries = fs.get_file_info(pafs.FileSelector(root, recursive=True,
                                                         allow_not_found=True))
        out: dict[str, int] = {}
        for entry in entries:
            if entry.type == pafs.FileType.File:
                top, nested, _ = entry.path[len(root):].lstrip("/").partition("/")
                name = f"{top}/" if nested else top  # folders end in /
                out[name] = out.get(name, 0) + (entry.size or 0)
        return out


def describe_sizes(sizes: dict[str, int]) -> str:
    """'84.1 MB (final/ 41.9 MB, wandb/ 30.2 MB, ...)': the total and its largest parts."""
    def mb(n: int) -> str:
        return f"{n / 1e6:.1f} MB"

    parts = sorted(sizes.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{name} {mb(n)}" for name, n in parts[:5])
    return f"{mb(sum(sizes.values()))} ({shown})"


def latest_run(results: str, experiment: str) -> str:
    """The run id of the newest run of `experiment` under `results` (a folder or a URI)."""
    import pyarrow.fs as pafs

    if is_uri(results):
        fs, root = _filesystem(f"{results.rstrip('/')}/{experiment}")
    else:
        fs, root = pafs.LocalFileSystem(), str(Path(results, experiment).resolve())
    with _reaching("read", results):
        runs = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        configs = fs.get_file_info([f"{e.path}/{CONFIG_FILE}" for e in runs
                                    if e.type == pafs.FileType.Directory])
    found = [c for c in configs if c.type == pafs.FileType.File]
    if not found:
        raise ConfigError(f"--resume: no run of this experiment ({experiment}) under {results}")
    newest = max(found, key=lambda c: c.mtime_ns or 0)
    return newest.path.rstrip("/").rsplit("/", 2)[-2]


def snapshot_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database, even while it is written (the backup API)."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(tmp)) as dst:
        src.backup(dst)
    os.replace(tmp, target)
