"""Sweeps: a grid of training runs (methods x env ids x seeds), on Slurm or on this machine.

Each grid point is one run of `sgqn.py`, `sac_baseline.py` or `soda.py`, executed in-process by its own job,
with a stable folder `{runs_dir}/{env_id}__{method}__{seed}`. submitit launches the jobs: one
Slurm job array where Slurm answers (`sbatch` on PATH and `scontrol ping` up, or `--cluster
slurm`), else local processes, `--parallel` at a time, for as long as this command runs.
Relaunching the same command skips finished runs and resumes the others from their checkpoints;
adding `--status` prints the state of each run and launches nothing.

    # this machine, 2 runs at a time; flags after `--` go to every run, a method adds its own
    python experiments/sweep.py --methods sgqn.py "drq=sac_baseline.py --augmentation shift" \\
        --env-ids cartpole-swingup --seeds 1 2 --runs-dir runs/cartpole --parallel 2 \\
        -- --total-timesteps 12500 --eval-freq 2500

    # Slurm: one job array, a GPU per run, at most 20 runs at a time, 24 h jobs that requeue
    python experiments/sweep.py --env-ids walker-walk finger-spin --seeds 1 2 3 --runs-dir runs/paper \\
        --partition gpu --gpus-per-run 1 --cpus-per-run 6 --mem-gb 32 --timeout-min 1440 \\
        --parallel 20 -- --eval-episodes 30

    # the same command with --status: each run's state (queued, running, done, stopped, failed)

Signals: submitit's preemption signal is made SIGUSR1 (Slurm sends it `--signal-delay-s` before the
time limit). While training, main()'s handlers take SIGUSR1/SIGTERM/SIGINT, save the checkpoint and
raise Interrupted with submitit's handlers back; on SIGUSR1 the job then calls submitit's handler,
which requeues it. SIGTERM stops without requeue (outside main() at once: submitit would ignore it).
"""

import contextlib
import dataclasses
import importlib
import io
import json
import logging
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Literal, Optional

import torch
import tyro

os.environ["SUBMITIT_PREEMPT_SIGNAL"] = "USR1"  # read when submitit is imported, here and in each job
import submitit  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import envs  # noqa: E402
import run_plumbing  # noqa: E402


@dataclass
class Args:
    methods: tuple[str, ...] = (
        "sac=sac_baseline.py --augmentation none",
        "rad=sac_baseline.py --augmentation crop",
        "soda=soda.py",
        "svea=sac_baseline.py --augmentation svea",
        "sgqn=sgqn.py",
        "drq=sac_baseline.py --augmentation shift",
    )
    """methods of the grid, each one string `[NAME=]SCRIPT [FLAG ...]`: NAME is the runs' exp_name (default: the script's), FLAGs go to this method only; the default is the paper's SAC, RAD, SODA, SVEA and SGQN, with DrQ beside them"""
    env_ids: tuple[str, ...] = ("walker-walk", "walker-stand", "ball_in_cup-catch", "cartpole-swingup", "finger-spin")
    """DMC tasks of the grid; the default is the paper's five"""
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    """seeds of the grid"""
    runs_dir: str = "runs"
    """folder of the run folders `{env_id}__{method}__{seed}`; job logs go to `{runs_dir}/jobs`"""
    status: bool = False
    """print the state of every run of this grid and exit, launching nothing"""
    cluster: Literal["auto", "slurm", "local"] = "auto"
    """where jobs run: `auto` is Slurm when its controller answers, else this machine"""
    parallel: Optional[int] = None
    """runs at a time: local processes (None: 1) or the Slurm array's limit (None: no limit)"""
    follow: bool = True
    """Slurm: print state changes until every job has ended (Ctrl-C stops following, not the jobs)"""

    # Resources of each Slurm job (one run); locally only --gpus-per-run applies
    gpus_per_run: int = 1
    """GPUs per run, 0 or 1 (a run uses one device); locally, runs go to the least busy visible GPU"""
    cpus_per_run: int = 6
    """CPU cores per run: the training env and the five eval-mode workers render on CPU"""
    mem_gb: int = 32
    """memory per run in GB (a 500k-frame replay buffer alone is 9.9 GiB, 14 GiB of RAD's and SODA's 100-px frames); 0: the partition's default"""
    timeout_min: int = 1440
    """time limit of a Slurm job in minutes; a run that needs longer checkpoints and requeues"""
    signal_delay_s: int = 180
    """SIGUSR1 comes this long before the time limit: time to finish the step and save the checkpoint"""
    max_timeouts: int = 10
    """requeues at the time limit before a job gives up (preemptions do not count)"""
    partition: Optional[str] = None
    """Slurm partition (None: the cluster's default)"""
    account: Optional[str] = None
    """Slurm account to charge (None: your default)"""
    qos: Optional[str] = None
    """Slurm quality of service (None: the partition's default)"""


# The sweep sets these in every run; a method or `--` flag naming one is an error.
SWEEP_FIELDS = ("env_id", "seed", "exp_name", "run_name", "runs_dir", "resume", "eval_checkpoint")
NO_TIME_LIMIT_MIN = 60 * 24 * 365 * 10  # local jobs run until they finish


class SweepError(ValueError):
    """Bad input to the sweep: printed as one `error:` line before anything launches."""


# ---------------------------------------------------------------------------------------------
# The grid: each script's own Args, parsed from its own flags
# ---------------------------------------------------------------------------------------------
def load_script(path):
    """Import a training script as a module (its folder on sys.path, for `import envs`)."""
    folder, filename = os.path.split(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(filename.removesuffix(".py"))


def parse_method(spec):
    """`[NAME=]SCRIPT [FLAG ...]` -> (name or None, absolute script path, flags)."""
    words = shlex.split(spec)
    if not words:
        raise SweepError("empty --methods entry")
    name, _, script = words[0].rpartition("=")
    if name and not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise SweepError(f"method name {name!r} in --methods: use letters, digits, '.', '_' or '-'")
    for path in (script, os.path.join(REPO, script)):
        if path.endswith(".py") and os.path.isfile(path):
            return name or None, os.path.abspath(path), words[1:]
    raise SweepError(f"script {script!r} in --methods {spec!r} not found (e.g. sgqn.py, sac_baseline.py, soda.py)")


def parse_script_args(module, flags, where):
    """The script's Args from its flags, parsed as the script itself parses them
    (run_plumbing.parse_cli); a bad flag or value is a one-line SweepError naming it."""
    owned = sorted(run_plumbing.given_fields(module.SCRIPT.Args, flags) & set(SWEEP_FIELDS))
    if owned:
        raise SweepError(
            f"--{owned[0].replace('_', '-')} in {where} is set by the sweep for each run "
            "(use --env-ids, --seeds, --methods NAME=..., --runs-dir)"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # --help among a method's flags
            args, _ = run_plumbing.parse_cli(module.SCRIPT.Args, flags)
    except envs.ConfigError as e:
        raise SweepError(f"{where}: {e}") from None
    except SystemExit:
        raise SweepError(f"{where}: --help is not a flag of a run") from None
    return args


def build_grid(args, shared_flags):
    """Every grid point as a TrainingRun, all of their Args parsed and checked; nothing runs."""
    if not (args.methods and args.env_ids and args.seeds):
        raise SweepError("the grid is empty: give --methods, --env-ids and --seeds at least one value each")
    for flag, values in (("--env-ids", args.env_ids), ("--seeds", args.seeds)):
        if len(set(values)) < len(values):
            raise SweepError(f"{flag} repeats a value: {' '.join(map(str, values))}")
    runs_dir = os.path.abspath(args.runs_dir)
    methods = {}
    for spec in args.methods:
        name, script, flags = parse_method(spec)
        module = load_script(script)
        script_args = parse_script_args(module, list(shared_flags) + flags, f"--methods {spec!r}")
        name = name or script_args.exp_name
        if name in methods:
            raise SweepError(f"two --methods are named {name!r}: name them, e.g. drq=sac_baseline.py")
        methods[name] = (script, script_args)
    runs = []
    for env_id in args.env_ids:
        for name, (script, script_args) in methods.items():
            for seed in args.seeds:
                run_args = dataclasses.replace(
                    script_args,
                    env_id=env_id,
                    seed=seed,
                    exp_name=name,
                    run_name=f"{env_id}__{name}__{seed}",
                    runs_dir=runs_dir,
                )
                runs.append(TrainingRun(script, dataclasses.asdict(run_args)))
    check_runs(runs)
    return runs


def check_runs(runs):
    """Each run's args through every check its script makes before it starts (run_plumbing.checked_args
    with the script's own checks: values, env id, modes, folders, SGQN's flags), in a scratch runs
    folder: the check makes the run folder, and neither --status nor a launch that fails may leave
    folders behind."""
    with tempfile.TemporaryDirectory() as scratch:
        for run in runs:
            script = load_script(run.script).SCRIPT
            try:
                run_plumbing.checked_args(script.Args(**{**run.fields, "runs_dir": scratch}), script)
            except envs.ConfigError as e:
                raise SweepError(f"{run.name}: {e}") from None


# ---------------------------------------------------------------------------------------------
# The job: one run, in the job's own process
# ---------------------------------------------------------------------------------------------
class TrainingRun(submitit.helpers.Checkpointable):
    """One grid point as a submitit job: the script's main(Args(...)) in this process, resumed
    from the run folder's checkpoint when there is one. A requeue (Checkpointable.checkpoint)
    submits this same object again, which resumes the same way."""

    def __init__(self, script, fields, gpu=None):
        self.script, self.fields = script, fields  # plain data: no script class in the pickle
        self.gpu = gpu  # a local sweep's GPU for this run, as its launcher's CUDA numbers it (None: Slurm's, or none)

    @property
    def name(self):
        return self.fields["run_name"]

    @property
    def run_dir(self):
        return os.path.join(self.fields["runs_dir"], self.fields["run_name"])

    def __call__(self):
        signal.signal(signal.SIGTERM, exit_on_signal)  # main() saves and stops on it while it trains
        # submitit logs through its own handler; a library the run imports configures the root
        # logger too, which would print every submitit line a second time.
        logging.getLogger("submitit").propagate = False
        gpu = getattr(self, "gpu", None)  # a run pickled before runs had one (a requeue across an upgrade): none
        if gpu is not None:  # before anything starts CUDA: the run's cuda:0 is this GPU
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        if finished(self):
            return self.run_dir
        module = load_script(self.script)
        # Imported here, not through this module's globals: a job unpickles this object before the
        # script's folder (with run_plumbing.py) is on its path.
        plumbing = importlib.import_module("run_plumbing")
        args = module.SCRIPT.Args(**self.fields)
        checkpoint = os.path.join(self.run_dir, "checkpoint.pt")
        if os.path.exists(checkpoint):
            args = dataclasses.replace(args, resume=checkpoint)
        try:
            module.main(args)
        except plumbing.Interrupted as interrupted:  # checkpoint saved; submitit's handlers are back
            requeue = signal.getsignal(signal.SIGUSR1)
            if interrupted.signum == signal.SIGUSR1 and callable(requeue):
                requeue(signal.SIGUSR1, None)  # preempted or at the time limit: submitit requeues and exits
            plumbing.ignore_stop_signals()  # the stop is honoured: a repeat must not break into the exit
            sys.exit(interrupted.exit_code)
        return self.run_dir


def exit_on_signal(signum, frame):
    # As run_plumbing.ignore_stop_signals (not importable yet where a job starts): a repeat of the
    # signal (submitit's controller forwards it too) must not break into the exit.
    for repeat in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(repeat, signal.SIG_IGN)
    sys.exit(128 + signum)


# ---------------------------------------------------------------------------------------------
# State of each run: its folder, and the job that holds it (records in {runs_dir}/jobs)
# ---------------------------------------------------------------------------------------------
def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def finished(run):
    """Whether the run's summary says it finished its total_timesteps (a larger total resumes it)."""
    summary = read_json(os.path.join(run.run_dir, "summary.json")) or {}
    return summary.get("status") == "finished" and summary.get("step", 0) >= run.fields["total_timesteps"]


def record_path(run):
    return os.path.join(run.fields["runs_dir"], "jobs", f"{run.name}.json")


def write_record(run, record):
    """Which job holds the run: {"cluster", "job_id", "pid" (local), "log", "result"}."""
    path = record_path(run)
    with open(f"{path}.tmp", "w") as f:
        json.dump(record, f)
    os.replace(f"{path}.tmp", path)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def slurm_job_states():
    """{array task id: Slurm state} of your queued and running jobs; None if squeue fails."""
    try:
        out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return dict(line.split() for line in out.stdout.splitlines() if line.strip())


def live_state(record, slurm_states):
    """ "queued" or "running" while a job holds the run, else None."""
    if record is None:
        return None
    if record["cluster"] == "local":
        if not pid_alive(record["pid"]):
            return None
        return "running" if record["job_id"] else "queued"
    state = (slurm_states or {}).get(record["job_id"])
    if state is None:
        return "unknown" if slurm_states is None else None
    return "running" if state in ("RUNNING", "COMPLETING", "CONFIGURING") else "queued"


def last_step(run):
    """The last evaluated step, from evaluations.csv (0 if none)."""
    try:
        with open(os.path.join(run.run_dir, "evaluations.csv")) as f:
            lines = f.read().split("\n")
    except OSError:
        return 0
    rows = [line for line in lines[1:] if line]
    return int(rows[-1].split(",")[0]) if rows else 0


def job_error(record):
    """The last line of the job's exception (from submitit's result pickle), or None."""
    if not record or not record.get("result"):
        return None
    try:
        with open(record["result"], "rb") as f:
            outcome, value = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError):
        return None
    return value.strip().splitlines()[-1] if outcome == "error" else None


def run_state(run, record, live):
    """(state, detail) of one run: not started, queued, running, done, stopped or failed."""
    total = run.fields["total_timesteps"]
    summary = read_json(os.path.join(run.run_dir, "summary.json")) or {}
    if finished(run):
        return "done", f"{summary['step']}/{total} steps in {summary.get('wall_time_s', 0) / 60:.1f} min"
    step = max(last_step(run), summary.get("step", 0))  # the last evaluation or checkpoint: a floor on its progress
    if live:
        log = f"; log {record['log']}" if record.get("log") else ""
        return live, f"past step {step}/{total}{log}" if step else log.lstrip("; ")
    error = job_error(record)
    if error:
        return "failed", f"{error}; log {record['log']}"
    if os.path.exists(os.path.join(run.run_dir, "checkpoint.pt")):
        return "stopped", f"checkpoint at step {summary.get('step', step)}/{total}: relaunch to resume"
    if record and record.get("job_id"):  # stopped before main() began, or killed (SIGKILL, out of memory)
        return "stopped", f"before its first checkpoint: relaunch to start it again; log {record['log']}"
    return "not started", ""


def grid_states(runs, live=None):
    """{run name: (state, detail)}; live: the launcher's own view of its local jobs."""
    records = {run.name: read_json(record_path(run)) for run in runs}
    if live is None:
        slurm = any(r and r["cluster"] == "slurm" for r in records.values())
        slurm_states = slurm_job_states() if slurm else {}
        live = {name: live_state(record, slurm_states) for name, record in records.items()}
    return {run.name: run_state(run, records[run.name], live.get(run.name)) for run in runs}


def print_table(runs, states):
    width = max(len(run.name) for run in runs)
    for run in runs:
        state, detail = states[run.name]
        print(f"  {run.name:<{width}}  {state:<11}  {detail}")
    counts = {}
    for state, _ in states.values():
        counts[state] = counts.get(state, 0) + 1
    print(f"{len(runs)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items()), flush=True)


def print_changes(runs, states, previous):
    for run in runs:
        state, detail = states[run.name]
        if state != previous.get(run.name, ("",))[0]:
            print(f"{time.strftime('%H:%M:%S')}  {state:<11}  {run.name}  {detail}", flush=True)


# ---------------------------------------------------------------------------------------------
# Launching: a Slurm job array, or local processes N at a time
# ---------------------------------------------------------------------------------------------
def slurm_answers():
    """Whether Slurm can take jobs: sbatch on PATH and the controller up (`scontrol ping`, which
    retries for a minute when no slurm.conf is found: 10 s is plenty for a live controller)."""
    if not shutil.which("sbatch"):
        return False
    try:
        answers = subprocess.run(["scontrol", "ping"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        answers = False
    if not answers:
        print("sbatch is on PATH but no Slurm controller answers (scontrol ping): running here (--cluster slurm to insist)")
    return answers


def launch_slurm(args, runs, jobs_dir):
    """Submit the runs as one job array, then follow their states (unless --no-follow)."""
    executor = submitit.SlurmExecutor(folder=jobs_dir, max_num_timeout=args.max_timeouts)
    resources = dict(
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        gpus_per_node=args.gpus_per_run or None,
        mem=f"{args.mem_gb}GB" if args.mem_gb else None,
    )
    executor.update_parameters(
        job_name=f"sweep-{os.path.basename(os.path.abspath(args.runs_dir))}",
        time=args.timeout_min,
        cpus_per_task=args.cpus_per_run,
        signal_delay_s=args.signal_delay_s,
        stderr_to_stdout=True,
        array_parallelism=args.parallel or len(runs),
        setup=["export SUBMITIT_PREEMPT_SIGNAL=USR1"],
        **{key: value for key, value in resources.items() if value is not None},
    )
    jobs = executor.submit_array(runs)
    for run, job in zip(runs, jobs):
        write_record(
            run,
            {"cluster": "slurm", "job_id": job.job_id, "log": str(job.paths.stdout), "result": str(job.paths.result_pickle)},
        )
    print(f"submitted Slurm job {jobs[0].job_id.split('_')[0]}: {len(runs)} runs, logs in {jobs_dir}", flush=True)
    if not args.follow:
        return False
    states, delay = {}, 5
    try:
        while True:  # squeue every 5 s after a change, backing off to once a minute
            states, previous = grid_states(runs), states
            print_changes(runs, states, previous)
            if not any(state in ("queued", "running", "unknown") for state, _ in states.values()):
                return True
            delay = 5 if states != previous else min(60, delay * 1.5)
            time.sleep(delay)
    except KeyboardInterrupt:
        print("stopped following; the jobs go on (--status to see them, scancel to stop them)", flush=True)
        return False


def launch_local(args, runs, jobs_dir):
    """Run the runs as local submitit jobs, --parallel at a time, until all have ended. SIGINT or
    SIGTERM stops them: each saves its checkpoint (relaunch to resume)."""
    executor = submitit.LocalExecutor(folder=jobs_dir, max_num_timeout=args.max_timeouts)
    gpus = visible_gpus() if args.gpus_per_run else []
    queue, running, stop = list(runs), {}, []  # running: name -> (job, gpu)

    def stop_jobs():
        for job, _ in running.values():  # submitit's controller passes it on to the job
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(job.job_id), signal.SIGTERM)

    def on_signal(signum, frame):
        if not stop:
            print(
                f"{signal.Signals(signum).name}: stopping {len(running)} running runs (each saves its "
                "checkpoint); relaunch to resume",
                flush=True,
            )
        stop.append(signum)
        stop_jobs()

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    for run in queue:  # queued while this launcher lives
        write_record(run, {"cluster": "local", "job_id": None, "pid": os.getpid()})
    states = {}
    try:
        while running or (queue and not stop):
            while queue and not stop and len(running) < (args.parallel or 1):
                run = queue.pop(0)
                busy = [gpu for _, gpu in running.values()]
                gpu = min(gpus, key=busy.count) if gpus else None
                # The job sets CUDA_VISIBLE_DEVICES to its GPU itself (TrainingRun.gpu): submitit would
                # renumber it from 0 and takes numbers only, not the UUIDs CUDA_VISIBLE_DEVICES may hold.
                executor.update_parameters(timeout_min=NO_TIME_LIMIT_MIN, stderr_to_stdout=True, gpus_per_node=0)
                run.gpu = gpu
                # The job starts with SIGINT ignored: a Ctrl-C in the terminal must not reach
                # submitit's controller, which would SIGKILL the job one second later. main()
                # installs its own SIGINT handler; the launcher stops jobs with SIGTERM.
                with ignoring_sigint():
                    job = executor.submit(run)
                running[run.name] = (job, gpu)
                write_record(
                    run,
                    {
                        "cluster": "local",
                        "job_id": job.job_id,
                        "pid": int(job.job_id),
                        "log": str(job.paths.stdout),
                        "result": str(job.paths.result_pickle),
                    },
                )
            if stop:  # again each second: a job that was just starting may have missed it (repeats are harmless)
                stop_jobs()
            for name in [name for name, (job, _) in running.items() if job.done()]:
                del running[name]
            live = {run.name: "queued" for run in queue} | {name: "running" for name in running}
            states, previous = grid_states(runs, live), states
            print_changes(runs, states, previous)
            time.sleep(1)
        return stop[0] if stop else None
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        for run in queue:  # never started: no job holds them
            os.remove(record_path(run))


def visible_gpus():
    """The GPUs this launcher may hand to its jobs, one run on each in turn: CUDA_VISIBLE_DEVICES's entries
    where it is set (a sweep started under CUDA_VISIBLE_DEVICES=2,3 runs its jobs on GPUs 2 and 3, not on 0
    and 1), up to an entry of -1 (CUDA's "none after this"); else every GPU, 0 to device_count - 1."""
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        return [str(i) for i in range(torch.cuda.device_count())]
    gpus = []
    for entry in os.environ["CUDA_VISIBLE_DEVICES"].split(","):
        if entry.strip() in ("", "-1"):
            break
        gpus.append(entry.strip())
    return gpus


@contextlib.contextmanager
def ignoring_sigint():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def main(args, script_flags=()):
    if args.parallel is not None and args.parallel < 1:
        raise SweepError(f"--parallel must be at least 1, got {args.parallel}")
    if args.gpus_per_run not in (0, 1):
        raise SweepError(f"--gpus-per-run must be 0 or 1 (a run uses one device), got {args.gpus_per_run}")
    for flag in ("cpus_per_run", "timeout_min", "max_timeouts"):
        if getattr(args, flag) < 1:
            raise SweepError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    runs = build_grid(args, script_flags)
    jobs_dir = os.path.join(os.path.abspath(args.runs_dir), "jobs")
    states = grid_states(runs)
    if args.status:
        print_table(runs, states)
        return 0
    held = [run.name for run in runs if states[run.name][0] in ("queued", "running", "unknown")]
    if held:
        raise SweepError(
            f"{len(held)} runs of this grid are held by jobs already ({held[0]}, ...): see --status, or stop those jobs first"
        )
    todo = [run for run in runs if states[run.name][0] != "done"]
    if not todo:
        print(f"sweep: all {len(runs)} runs in {args.runs_dir} are done; nothing to run")
        return 0
    cluster = args.cluster if args.cluster != "auto" else "slurm" if slurm_answers() else "local"
    if cluster == "slurm" and not shutil.which("sbatch"):
        raise SweepError("--cluster slurm: sbatch not found on PATH")
    print(
        f"sweep: {len(runs)} runs in {args.runs_dir} ({len(runs) - len(todo)} done), {len(todo)} to run on "
        f"{cluster}" + (f", {args.parallel or 1} at a time" if cluster == "local" else "")
    )
    for run in todo:
        resumes = os.path.exists(os.path.join(run.run_dir, "checkpoint.pt"))
        print(f"  {'resume' if resumes else 'start':<6}  {run.name}  {states[run.name][1]}")
    os.makedirs(jobs_dir, exist_ok=True)
    stopped_by = None
    if cluster == "slurm":
        if not launch_slurm(args, todo, jobs_dir):
            return 0
    else:
        stopped_by = launch_local(args, todo, jobs_dir)
    states = grid_states(runs)
    print_table(runs, states)
    if stopped_by:
        return 128 + stopped_by
    return 0 if all(state == "done" for state, _ in states.values()) else 1


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    try:
        sys.exit(main(tyro.cli(Args, args=argv[:split], description=__doc__), argv[split + 1 :]))
    except SweepError as e:
        sys.exit(f"error: {e}")
