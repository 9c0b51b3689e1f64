"""Build, run and restore one Ray Tune search: Optuna TPE (in an RDB study, through medtune's
own searcher, `search.engine.searcher`) + ASHA.

Traps of Ray Tune 2.60 + Optuna 5 this module avoids (DESIGN.md):
- only `ray.tune` names (`tune.RunConfig`, `tune.FailureConfig`, ...);
- the define-by-run space is a module-level function of the experiment module (picklable);
- `metric` and `mode` go to both the searcher and ASHA;
- the sampler gets `seed`, `multivariate`, `group`, `constant_liar` explicitly;
- a restored Tuner keeps the searcher and callbacks it was started with: this driver's are
  bound to the run while it fits (`search.engine.binding`), not swapped into Ray's internals;
- a GPU request the cluster cannot meet fails at once instead of leaving trials PENDING;
- trials a killed driver left RUNNING in `study.db` are marked failed on resume;
- W&B's logging actors get `WANDB_MODE` through the runtime_env.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from search.engine.binding import Binding, DriverCallbacks, listed_trials, stop_note
from search.engine.searcher import FixedSpace, StudySearcher, make_sampler, trial_length
from search.engine.storage import STUDY_FILE, TUNE_FOLDER, RunStore
from spaces.base import Experiment
from trainables.errors import ConfigError

log = logging.getLogger(__name__)

# A trial's process is reused for the next trial (Ray resets the function trainable): a new
# process per trial costs its start-up and the torch/timm imports, about 6 s on a 2-core
# machine, per trial (`python -m search.bench overhead`). Trials reseed everything they use.
TUNE_OPTIONS: dict[str, Any] = {"reuse_actors": True}


@dataclass(frozen=True)
class SearchPlan:
    """Everything that fixes one search; stored in the run folder's config.json."""

    experiment: Experiment
    store: RunStore  # where the run folder is written (and kept, for an object store)
    fixed: dict[str, Any]  # the trial config without the searched values
    pinned: dict[str, Any]  # searched keys fixed by --set for every trial
    num_samples: int
    max_epochs: int
    seed: int
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int
    wandb: bool
    top_k: int = 3
    demo: bool = False  # the experiment's demo space (shorter phases), where it has one
    sampler: str = "tpe"  # or "random" (a baseline)
    scheduler: str = "asha"  # or "fifo": no early stopping (a baseline)
    replay: dict[str, Any] | None = None  # table, time_scale: served curves (search.engine.replay)
    batch: int | None = None  # --reproducible: configurations asked in batches this big
    warm_start: tuple[str, ...] = ()  # --warm-start: earlier runs whose trials are priors
    objectives: tuple[tuple[str, str], ...] = ()  # --objectives: (metric, mode), the first ASHA's
    budget_gpu_hours: float | None = None  # --budget-gpu-hours: no new trial past it (LiveLimiter)

    @property
    def run_dir(self) -> Path:
        return self.store.local

    @property
    def run_id(self) -> str:
        return self.store.run_id

    @property
    def storage_url(self) -> str:
        return study_url(self.run_dir)

    @property
    def staged_study(self) -> Path | None:
        """The SQLite study file, when it must travel with Ray's experiment state."""
        if self.store.uri is None or os.environ.get("MEDTUNE_STUDY_URL"):
            return None
        return self.run_dir / STUDY_FILE


def study_url(run_dir: Path) -> str:
    """$MEDTUNE_STUDY_URL (a database URL on a cluster) or the run folder's SQLite file."""
    return os.environ.get("MEDTUNE_STUDY_URL") or f"sqlite:///{run_dir / STUDY_FILE}"


def on_driver_node() -> dict[str, Any]:
    """Ray options for an actor that serves this driver: on its node, taking no CPU."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=False)}


CLIENT_TRIES = 3  # Ray Client connections tried (below)


def connect_ray(*, env: dict[str, str]) -> None:
    """Join the cluster at RAY_ADDRESS, or start a local Ray on this machine. Over Ray Client
    (ray://) the cluster's proxy starts a server process per connection, and that start can
    fail now and then (its process dies at birth: "Initialization failure from server"); a new
    connection gets a new one, so it is tried `CLIENT_TRIES` times."""
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": env}
    address = os.environ.get("RAY_ADDRESS", "")
    # unset: ray.init() joins the cluster this machine is the head of (ray up), else starts
    # one; "local" (Ray's word): always a Ray of its own
    address = _check_reachable(address)
    here = address in ("", "local")
    try:
        if here:
            ray.init(address=address or None, include_dashboard=False, runtime_env=runtime_env,
                     log_to_driver=False)
            return
        for attempt in range(1, CLIENT_TRIES + 1):
            try:
                ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
                return
            except ConnectionAbortedError as e:  # Ray Client: the server's start failed
                if attempt == CLIENT_TRIES or not address.startswith("ray://"):
                    raise
                log.warning("Ray Client: %s (try %d of %d)", str(e).splitlines()[0], attempt,
                            CLIENT_TRIES)
                time.sleep(2.0 * attempt)
    except (ray.exceptions.AuthenticationError, ConnectionError) as e:
        where = "Ray on this machine" if here else f"the Ray cluster at RAY_ADDRESS={address}"
        hint = ("; a cluster that asks for a token (Ray's default) needs RAY_AUTH_MODE=token "
                "on a Ray Client driver" if address.startswith("ray://")
                and os.environ.get("RAY_AUTH_MODE") != "token" else "")
        raise ConfigError(f"cannot join {where}: {e}{hint}") from None


def recorded_head() -> tuple[Path, str | None]:
    """The file where `ray start --head` on this machine records its address for `ray.init()`
    to join (ray.init's docs: /tmp/ray/ray_current_cluster; $RAY_TMPDIR, or $TMPDIR on Linux,
    in place of /tmp), and the address in it, if any."""
    tmp = os.environ.get("RAY_TMPDIR") or (
        os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None) or "/tmp"
    record = Path(tmp) / "ray" / "ray_current_cluster"
    try:
        return record, record.read_text().strip() or None
    except OSError:
        return record, None


def answers(address: str, timeout: float = 5.0) -> bool:
    """Whether something accepts a connection at HOST:PORT (a Ray head's GCS or client port)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _check_reachable(address: str) -> str:
    """The address to give ray.init. Ray waits about 13 minutes, silently, on a head that is
    gone (20 tries of 40 s): a head recorded by `ray start` that no longer answers (stopped
    without `ray stop`, or the machine restarted) is passed over for a Ray of our own, with a
    warning; a RAY_ADDRESS where nothing answers is one clear error."""
    if address in ("", "auto"):
        record, head = recorded_head()
        if head is not None and not answers(head):
            if address == "auto":
                raise ConfigError(f"cannot join the Ray cluster at RAY_ADDRESS=auto: the head "
                                  f"recorded in {record} ({head}) does not answer")
            log.warning("the Ray head recorded in %s (%s) does not answer (stopped without "
                        "`ray stop`?): starting a Ray of this driver's own", record, head)
            return "local"
        return address
    target = address.removeprefix("ray://")
    port = target.rpartition(":")[2]
    if address != "local" and port.isdigit() and not answers(target):
        raise ConfigError(f"cannot join the Ray cluster at RAY_ADDRESS={address}: nothing "
                          "answers there (is its head running? `ray status` on the head says)")
    return address


@dataclass(frozen=True)
class NodeShape:
    """CPUs and GPUs of one node, or of each node of an autoscaler's node type."""

    name: str  # "node 1a2b3c4d" (a live node) or "node type gpu_worker" (the autoscaler's)
    cpus: float | None  # None: not stated (the autoscaler fills it in from the instance type)
    gpus: float | None
    count: int = 1  # nodes of this shape at most

    @property
    def known(self) -> bool:
        return self.cpus is not None and self.gpus is not None

    def trials(self, cpus_per_trial: float, gpus_per_trial: float) -> int:
        """How many trials one such node holds at once."""
        if not self.known:
            return 0
        limits = [int((self.cpus or 0.0) // cpus_per_trial)] if cpus_per_trial else []
        if gpus_per_trial:
            limits.append(int((self.gpus or 0.0) // gpus_per_trial))
        return min(limits) if limits else 0

    def __str__(self) -> str:
        if not self.known:
            return f"{self.name} (resources not stated)"
        many = f" x{self.count}" if self.count != 1 else ""
        return f"{self.name}{many} ({self.cpus:g} CPU, {self.gpus:g} GPU)"


def live_node_shapes() -> list[NodeShape]:
    """The nodes of the connected Ray cluster, as they are now."""
    return [NodeShape(f"node {n['NodeID'][:8]}", float(n["Resources"].get("CPU", 0.0)),
                      float(n["Resources"].get("GPU", 0.0)))
            for n in ray.nodes() if n.get("Alive")]


def autoscaler_running() -> bool:
    """Whether the cluster has an autoscaler that can start nodes.

    The one place medtune reaches inside Ray: no public API says whether a cluster autoscales
    or what it may start (ray-project/ray#37838 and #52033, both open). Ray's monitor writes
    its status into the GCS key-value store every few seconds (`ray status` reads the same
    key). A plain Ray has a monitor too, in read-only mode: it maps each live node to a node
    type named after the node itself; an autoscaler maps nodes to the node types of its
    config. Canaries: if a Ray release moves any of it, tests/test_autoscaler.py (which needs
    True) and tests/test_search.py (False) fail here.
    """
    from ray._private import ray_constants
    from ray.autoscaler._private.util import format_readonly_node_type
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return False
    status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    try:
        report = json.loads(status or "{}").get("autoscaler_report") or {}
    except ValueError:
        return False
    mapping = report.get("node_type_mapping") or {}
    return any(kind != format_readonly_node_type(node) for node, kind in mapping.items())


def autoscaler_config_path() -> Path:
    """$MEDTUNE_AUTOSCALER_CONFIG, else where `ray up` puts the config on the head node (the
    path `cluster/gpu.yaml` starts its autoscaler with)."""
    return Path(os.environ.get("MEDTUNE_AUTOSCALER_CONFIG") or "~/ray_bootstrap_config.yaml"
                ).expanduser()


def autoscaler_node_types(path: Path) -> list[NodeShape]:
    """The node types of an autoscaler config (YAML or JSON), as `ray up` resolved them."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
        types = config["available_node_types"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise ConfigError(f"autoscaler config {path}: cannot read its available_node_types "
                          f"({e}); set MEDTUNE_AUTOSCALER_CONFIG to the cluster's config") from None
    head = config.get("head_node_type")
    shapes = []
    for name, node_type in types.items():
        resources = node_type.get("resources") or {}
        count = 1 if name == head else int(node_type.get("max_workers",
                                                         config.get("max_workers", 0)))
        known = "CPU" in resources  # GPU absent means none; CPU absent means not stated
        shapes.append(NodeShape(f"node type {name}",
                                float(resources["CPU"]) if known else None,
                                float(resources.get("GPU", 0.0)) if known else None, count))
    return shapes


@dataclass(frozen=True)
class ClusterShape:
    """The nodes a trial could be placed on: the live ones and, with an autoscaler, the node
    types it may start (`autoscaler` None: no autoscaler; a path: where its types came from)."""

    live: list[NodeShape]
    types: list[NodeShape]
    autoscaler: str | None = None

    @classmethod
    def of_cluster(cls) -> ClusterShape:
        path = autoscaler_config_path()
        explicit = bool(os.environ.get("MEDTUNE_AUTOSCALER_CONFIG"))
        if explicit and not path.is_file():
            raise ConfigError(f"MEDTUNE_AUTOSCALER_CONFIG={path}: no such file (give the "
                              "cluster's autoscaler config, or unset it)")
        live = live_node_shapes()
        if not (explicit or autoscaler_running()):
            return cls(live, [])
        if path.is_file():
            return cls(live, autoscaler_node_types(path), str(path))
        # an autoscaler we cannot read (KubeRay, a config elsewhere): its types are unknown
        return cls(live, [NodeShape("the autoscaler's node types", None, None)], "unknown")


def check_resources(cpus_per_trial: float, gpus_per_trial: float,
                    cluster: ClusterShape | None = None) -> ClusterShape:
    """Fail at once on a request that no node can hold: such trials would stay PENDING forever.

    A request fits when one node holds it whole (a trial runs on one node): a live node, or a
    node type the autoscaler can start (a cluster that starts with no GPU worker is fine).
    """
    cluster = ClusterShape.of_cluster() if cluster is None else cluster
    shapes = cluster.live + cluster.types
    if any(s.trials(cpus_per_trial, gpus_per_trial) for s in shapes):
        return cluster
    if any(not s.known for s in shapes):
        log.warning("the autoscaler's node types are not known here (%s): cannot check that "
                    "one holds %g CPU + %g GPU; set MEDTUNE_AUTOSCALER_CONFIG to its config",
                    cluster.autoscaler, cpus_per_trial, gpus_per_trial)
        return cluster
    types = (f"; the autoscaler's node types ({cluster.autoscaler}): "
             + ", ".join(map(str, cluster.types))) if cluster.autoscaler else \
        "; no autoscaler"
    raise ConfigError(
        f"each trial asks for {cpus_per_trial:g} CPU and {gpus_per_trial:g} GPU on one node, "
        f"but no node can hold that: the live nodes are {', '.join(map(str, cluster.live))}"
        f"{types}. Lower --gpus-per-trial / --cpus-per-trial (--gpus-per-trial 0 runs on "
        "CPUs) or add a node (type) that big")


def default_concurrency(cpus_per_trial: float, gpus_per_trial: float,
                        cluster: ClusterShape | None = None) -> int:
    """As many trials as the cluster holds at its largest: its live nodes, or every node the
    autoscaler may start, each node counted whole (a trial cannot straddle two)."""
    cluster = ClusterShape.of_cluster() if cluster is None else cluster
    live = sum(s.count * s.trials(cpus_per_trial, gpus_per_trial) for s in cluster.live)
    scaled = sum(s.count * s.trials(cpus_per_trial, gpus_per_trial) for s in cluster.types)
    return max(1, live, scaled)


def make_searcher(plan: SearchPlan, startup_trials: int) -> ConcurrencyLimiter:
    sampler = (optuna.samplers.RandomSampler(seed=plan.seed) if plan.sampler == "random"
               else optuna.samplers.NSGAIISampler(seed=plan.seed) if plan.sampler == "nsga2"
               else make_sampler(plan.seed, startup_trials))
    searcher = StudySearcher(
        FixedSpace(plan.experiment.search_space(plan.demo), plan.pinned),
        metric=plan.experiment.metric, mode=plan.experiment.mode,
        study_name=plan.run_id, study_url=plan.storage_url, sampler=sampler,
        max_epochs=plan.max_epochs, snapshot=plan.staged_study, batch=plan.batch,
        num_samples=plan.num_samples, objectives=[(k, m) for k, m in plan.objectives] or None)
    return LiveLimiter(searcher, max_concurrent=plan.max_concurrent, run_id=plan.run_id,
                       num_samples=plan.num_samples, max_epochs=plan.max_epochs,
                       gpus_per_trial=plan.gpus_per_trial, budget_gpu_hours=plan.budget_gpu_hours)


ALIVE, ENDED = ("PENDING", "RUNNING", "PAUSED"), ("TERMINATED", "ERROR")  # Ray's trial statuses


class LiveLimiter(ConcurrencyLimiter):
    """Ray Tune's concurrency limit, kept in step with the trials Ray's controller lists.

    Ray saves its experiment state (the trials and their statuses) and the search's state (this
    limiter's live trials, its count of trials created, the searcher's) into a local folder
    and uploads it file by file, while the upload of the save before may still be reading it.
    A driver killed then can leave a mix on a slow store (seen on S3): restored, the limiter
    counted two trials live that Ray held as ended, never to be reported again, and the
    search waited for them forever; Ray's count of trials created was behind its list of
    trials, and it made more than --num-samples. So before each suggestion: trials Ray lists
    as ended are not live, trials it runs are; and no more trials than planned, counting Ray's.

    With a GPU-hour budget (--budget-gpu-hours), no new trial once the hours Ray's trials held,
    the running ones' rest at full length and one more full-length trial would pass it."""

    def __init__(self, searcher: Searcher, *, max_concurrent: int, run_id: str,
                 num_samples: int, max_epochs: int = 1, gpus_per_trial: float = 0.0,
                 budget_gpu_hours: float | None = None) -> None:
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.run_id, self.num_samples, self.max_epochs = run_id, num_samples, max_epochs
        self.gpus_per_trial, self.budget_gpu_hours = gpus_per_trial, budget_gpu_hours
        self.handed: set[str] = set()  # trials suggested since this limiter was made or restored

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.handed = set()  # restored: Ray's own list of trials counts, not a stale state's

    def suggest(self, trial_id: str) -> dict | None:
        trials = listed_trials(self.run_id)
        ended = {t.trial_id for t in trials if t.status in ENDED}
        running = {t.trial_id for t in trials if t.status in ALIVE}
        self.live_trials = (self.live_trials - ended) | running
        known = {t.trial_id for t in trials} | self.handed  # what Ray runs or will run
        if len(known - {trial_id}) >= self.num_samples or self._over_budget(trials):
            return Searcher.FINISHED  # type: ignore[return-value]  # Ray: Optional[Dict]
        suggestion = super().suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.handed.add(trial_id)
        return suggestion

    def _over_budget(self, trials: list[Any]) -> bool:
        if self.budget_gpu_hours is None:
            return False
        spent, rest, epochs = 0.0, 0.0, []
        for trial in trials:
            result = trial.last_result or {}
            seconds, done = float(result.get("time_total_s") or 0), int(result.get("epoch") or 0)
            spent += seconds
            if done:
                epochs.append(seconds / done)
                if trial.status in ALIVE:
                    rest += (trial_length(trial.config, self.max_epochs) - done) * seconds / done
        one_more = self.max_epochs * (sum(epochs) / len(epochs)) if epochs else 0.0
        committed = self.gpus_per_trial * (spent + rest + one_more) / 3600
        if committed <= self.budget_gpu_hours:
            return False
        stop_note(self.run_id, (
            f"--budget-gpu-hours {self.budget_gpu_hours:g}: {self.gpus_per_trial * spent / 3600:.3f}"
            f" GPU-hours spent, {committed:.3f} with the running trials' rest and one more "
            "trial: no new trial"))
        return True

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        # Ray's limiter tells its searcher only of the trials it holds live: a trial Ray
        # restored running that a stale state did not list would never reach the study
        self.live_trials.add(trial_id)
        super().on_trial_complete(trial_id, result=result, error=error)


def binding(plan: SearchPlan, callbacks: list[tune.Callback]) -> Binding:
    """What this driver binds to the run while it fits (search.engine.binding)."""
    return Binding(plan.storage_url, plan.staged_study, callbacks)


def make_scheduler(plan: SearchPlan, grace_period: int,
                   reduction_factor: int) -> ASHAScheduler | FIFOScheduler:
    if plan.scheduler == "fifo":  # every trial runs its full length
        return FIFOScheduler()
    if plan.batch or plan.warm_start:  # cutoffs from earlier batches, or with prior curves
        from search.engine.study_asha import StudyASHA

        return StudyASHA(metric=plan.experiment.metric, mode=plan.experiment.mode,
                         max_t=plan.max_epochs, grace_period=grace_period,
                         reduction_factor=reduction_factor, batch=plan.batch,
                         study_name=plan.run_id, study_url=plan.storage_url)
    return ASHAScheduler(
        time_attr="training_iteration", metric=plan.experiment.metric, mode=plan.experiment.mode,
        max_t=plan.max_epochs, grace_period=min(grace_period, plan.max_epochs),
        reduction_factor=reduction_factor)


def trainable_with_resources(plan: SearchPlan) -> Any:
    trainable = plan.experiment.trainable()
    if plan.replay:  # recorded curves instead of training; the surrogate travels once
        from search.engine.replay import load_surrogate, replay_trainable

        trainable = tune.with_parameters(
            replay_trainable, surrogate=load_surrogate(plan.replay["table"]),
            metric=plan.experiment.metric, time_scale=float(plan.replay["time_scale"]))
    return tune.with_resources(trainable, {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})


def trial_dirname(trial: Any) -> str:
    """Short trial folders (Ray's default spells out the whole config)."""
    return f"trial_{trial.trial_id}"


def run_config(plan: SearchPlan, callbacks: list[tune.Callback]) -> tune.RunConfig:
    return tune.RunConfig(
        name=TUNE_FOLDER, storage_path=plan.store.tune_storage, verbose=0,
        callbacks=[DriverCallbacks(plan.run_id, callbacks)],
        # a crashed trial is retried from its last checkpoint (a NaN trial too, as Ray cannot
        # retry by exception type: it fails again within an epoch)
        failure_config=tune.FailureConfig(max_failures=2),
        # the latest two checkpoints of a trial, by time: a resume needs the latest one (the
        # final step retrains, so no trial's best weights are kept). Ranked by score, Ray deletes
        # the previous latest as soon as a newer one puts it out of the best two, and a driver
        # killed before its next experiment-state sync leaves a state pointing at a deleted
        # checkpoint (that trial then cannot resume); by time, that one is still there.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )


def new_tuner(plan: SearchPlan, callbacks: list[tune.Callback], *, startup_trials: int,
              grace_period: int, reduction_factor: int) -> tune.Tuner:
    return tune.Tuner(
        trainable_with_resources(plan),
        param_space=plan.fixed,
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(plan, startup_trials),
            scheduler=make_scheduler(plan, grace_period, reduction_factor),
            num_samples=plan.num_samples, trial_dirname_creator=trial_dirname,
            trial_name_creator=trial_dirname, **TUNE_OPTIONS),
        run_config=run_config(plan, callbacks),
    )


def restored_tuner(plan: SearchPlan) -> tune.Tuner:
    """The interrupted search of the run folder, with its searcher and scheduler state. Fit it
    inside `bound_to(plan.run_id, binding(plan, callbacks))`: the restored searcher then opens
    the study where this driver keeps it, and the restored callbacks relay to this driver's."""
    path = f"{plan.store.tune_storage}/{TUNE_FOLDER}"
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"--resume: no Ray Tune experiment to restore in {path}")
    # errored trials too: a killed driver can record its running trials as ERROR as it dies;
    # they continue from their last checkpoint (a NaN trial fails again within an epoch)
    try:
        return tune.Tuner.restore(path, trainable=trainable_with_resources(plan),
                                  resume_unfinished=True, resume_errored=True,
                                  param_space=plan.fixed)
    except (AttributeError, ModuleNotFoundError) as e:  # unpickling an older medtune's objects
        raise ConfigError(
            f"--resume: {path} was started by an older medtune whose searcher or callbacks "
            f"this one no longer has ({e}); start a new run with --warm-start "
            f"{plan.store.location} to carry its finished trials over") from None


def mark_stale_trials_failed(storage_url: str, study_name: str) -> int:
    """A killed driver leaves trials RUNNING in the RDB study. Ray resumes the ones it had
    checkpointed (they finish normally); once the search is complete, any still RUNNING had
    no one to finish them and are marked failed."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage_url)
    except KeyError:
        return 0
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    storage = optuna.storages.get_storage(storage_url)
    study_id = storage.get_study_id_from_name(study_name)
    for trial in stale:  # marked, so that a reader can tell them from trials that ran and failed
        key = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(key, STALE_ATTR, True)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(stale)


STALE_ATTR = "left_running"  # a study trial no driver finished: Ray's saved state lost it
