"""Run plumbing of sgqn.py and sac_baseline.py: what a training run needs besides the method.

Both scripts import this module; it imports neither of them. What differs between them comes in as
arguments (a `Script`: the script's name, its `Args`, what `--resume` may change, its own checks).
It holds:
  - the command line: `parse_cli` (tyro, every bad flag a one-line `ConfigError`; which fields the
    command line names), the checks of every flag and the merging of a checkpoint's flags with
    the command line's for `--resume` and `--eval-checkpoint` (`checked_args`);
  - checkpoints: `save_checkpoint` (atomic), `load_checkpoint`, `restore`;
  - the run files: `args.json`, `evaluations.csv`, `summary.json` (`read_args` reads args.json back);
  - `Run`: one training run's bookkeeping, called by the script's loop (when to evaluate and save,
    the first-updates burst's count, TensorBoard scalars, progress lines with an ETA, the end);
  - signals (`stop_signals`, `Interrupted`), the console (`CONSOLE`, `heartbeat`: never silent
    for more than QUIET_SECONDS), the start block and the summary;
  - the evaluation workers (`make_eval_envs`), videos, and glibc's allocator (`keep_freed_memory`).
"""

import atexit
import collections
import contextlib
import csv
import ctypes
import dataclasses
import difflib
import functools
import io
import json
import os
import random
import secrets
import signal
import sys
import threading
import time
import types
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import tyro
from torch.utils.tensorboard import SummaryWriter

import envs

QUIET_SECONDS = 25  # the longest the console stays silent (start-up, first-updates burst, evaluations, training)
POSITIVE = (
    "total_timesteps", "buffer_size", "batch_size", "actor_update_freq", "target_update_freq", "num_conv_layers",
    "num_filters", "projection_dim", "hidden_dim", "image_size", "frame_stack", "eval_freq", "eval_episodes",
    "log_freq", "console_freq", "save_freq", "shift_copies",
)  # fmt: skip
# What --resume may change in both scripts; everything else (env, algorithm, architecture, seed) is the checkpoint's.
RESUMABLE = (
    "total_timesteps", "eval_freq", "eval_episodes", "eval_modes", "log_freq", "console_freq", "save_freq",
    "save_buffer", "keep_checkpoints", "capture_video", "video_easy_dir", "video_hard_dir", "davis_dir", "runs_dir",
    "cuda", "channels_last", "compile", "tf32", "track", "wandb_project_name", "wandb_entity",
)  # fmt: skip
WANDB_INSTALL = "pip install wandb==0.31.0"  # the version requirements-test.txt pins and the tests use
WANDB_ID_FILE = "wandb_run_id"  # in the run folder: a resumed run continues the same W&B run
EVALUATION_COLUMNS = ("step", "frames", "mode", "episode", "return")
SALIENCY_COLUMNS = ("step", "frames", "mode", "mask_on_agent", "agent_share", "images")


@dataclass(frozen=True)
class Script:
    """What the plumbing needs to know of a training script."""

    name: str  # the script's file name without .py: written into its checkpoints and run files
    Args: type  # its tyro dataclass
    resumable: tuple  # the fields --resume may change
    checks: tuple = ()  # its own checks of the effective args (functions raising envs.ConfigError)


# ---------------------------------------------------------------------------------------------
# The command line and the checks of every flag
# ---------------------------------------------------------------------------------------------
def parse_cli(Args, argv=None):
    """The Args of a command line (sys.argv by default), parsed by tyro, and the fields the command line
    names (given_fields). A bad flag or value is a one-line envs.ConfigError (tyro's box, condensed)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args, unknown = tyro.cli(Args, args=argv, return_unknown_args=True)
    except SystemExit as e:
        if not e.code:  # --help
            raise
        raise envs.ConfigError(tyro_message(errors.getvalue())) from None
    if unknown:
        known = ["--" + f.name.replace("_", "-") for f in dataclasses.fields(Args)]
        close = difflib.get_close_matches(unknown[0], known, n=1)
        raise envs.ConfigError(f"unrecognized {' '.join(unknown)}" + (f" (did you mean {close[0]}?)" if close else ""))
    return args, given_fields(Args, argv)


def tyro_message(text):
    """The first section of tyro's error box, on one line."""
    lines = [line.strip(" │") for line in text.splitlines()]
    rules = [i for i, line in enumerate(lines) if line and (set(line) <= set("-─╭╮╰╯") or line[0] in "╭╰")]
    body = lines[rules[0] + 1 : rules[1]] if len(rules) > 1 else lines
    return " ".join(" ".join(body).split()) or "bad flags"


def given_fields(Args, argv):
    """The fields a command line names, as tyro reads them (--num-filters 8, --num_filters=8, --no-cuda):
    whether a flag was given is a fact of the command line, not of its value."""
    names = {f.name for f in dataclasses.fields(Args)}
    words = [word[2:].split("=")[0].replace("-", "_") for word in argv if word.startswith("--")]
    return {word if word in names else word.removeprefix("no_") for word in words} & names


def as_flag(name, value):
    """A field as it is written on the command line: --num-filters 8, --no-cuda, --eval-modes train video_hard."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {' '.join(map(str, value)) if isinstance(value, tuple) else value}"


def merged_args(args, state, path, changeable, fresh=(), given=None):
    """The args a checkpoint was trained with, where the command line changes only the `changeable`
    fields and always sets the `fresh` ones. `given`: the fields the command line names (None, for
    callers with Args of their own: those that differ from their defaults). A given flag that
    contradicts the checkpoint on any other field is a one-line error naming it and the checkpoint's value."""
    saved, merged, conflicts = state["args"], {}, []
    for field in dataclasses.fields(args):
        name, value = field.name, getattr(args, field.name)
        named = value != field.default if given is None else name in given
        if name in ("resume", "eval_checkpoint", "eval_csv") + fresh or name not in saved:
            merged[name] = value
        elif not named or value == saved[name]:
            merged[name] = saved[name]
        elif name in changeable:
            merged[name] = value
        else:
            conflicts.append(f"{as_flag(name, value)} (checkpoint: {saved[name]})")
    if conflicts:
        raise envs.ConfigError(
            f"{', '.join(conflicts)}: contradicts the checkpoint {path}; drop it (only "
            f"{' '.join('--' + n.replace('_', '-') for n in changeable if n in merged)} may differ)"
        )
    return type(args)(**merged)


def checked_args(args, script, given=None):
    """Every check that can fail, before anything slow starts, each a one-line envs.ConfigError: the
    checkpoints (a resumed or evaluated run takes its args from there; see merged_args), sizes and
    frequencies, env id and modes, folders, and the script's own checks. Returns the effective args (with the
    run folder's name), the --resume checkpoint and the --eval-checkpoint checkpoint (None when not given)."""
    if args.resume and args.eval_checkpoint:
        raise envs.ConfigError("give --resume (continue training) or --eval-checkpoint (evaluate only), not both")
    # A run folder stands for its checkpoint.pt (--resume runs/X, --eval-checkpoint runs/X).
    for name in ("resume", "eval_checkpoint"):
        path = getattr(args, name)
        if path and os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "checkpoint.pt")):
                raise envs.ConfigError(f"--{name.replace('_', '-')} {path}: a folder without checkpoint.pt")
            args = dataclasses.replace(args, **{name: os.path.join(path, "checkpoint.pt")})
    resumed = load_checkpoint(args.resume, script.name) if args.resume else None
    evaluated = load_checkpoint(args.eval_checkpoint, script.name) if args.eval_checkpoint else None
    if resumed:
        args = merged_args(args, resumed, args.resume, script.resumable, given=given)
        if args.runs_dir == resumed["args"].get("runs_dir", script.Args.runs_dir):  # not moved: continue beside the checkpoint
            args.runs_dir, args.run_name = os.path.split(os.path.dirname(args.resume) or ".")
    elif evaluated:
        # An evaluation is asked for afresh: its modes and episodes are the command line's (or their
        # defaults), never those the run was evaluated with while training.
        fresh = ("eval_episodes", "eval_modes")
        args = merged_args(args, evaluated, args.eval_checkpoint, script.resumable + ("seed",), fresh, given)
        default_csv = os.path.join(os.path.dirname(args.eval_checkpoint), f"eval_checkpoint_step{evaluated['step']}.csv")
        args.eval_csv = args.eval_csv or default_csv
    else:
        args = dataclasses.replace(
            args, run_name=args.run_name or f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
        )
    for name in POSITIVE:
        if getattr(args, name, 1) < 1:  # soda.py has no --shift-copies
            raise envs.ConfigError(f"{as_flag(name, getattr(args, name))}: must be at least 1")
    if getattr(args, "shift_copies", 1) > 1 and args.augmentation in ("none", "crop"):
        raise envs.ConfigError(
            f"--shift-copies {args.shift_copies} needs --augmentation shift or svea (--augmentation {args.augmentation} shifts no copies)"
        )
    if args.track:
        try:
            import wandb  # noqa: F401  (optional: only --track needs it)
        except ImportError:
            raise envs.ConfigError(f"--track logs to Weights & Biases, which is not installed: {WANDB_INSTALL}") from None
    if args.learning_starts < 0:
        raise envs.ConfigError(f"--learning-starts {args.learning_starts}: must be 0 or more")
    if not args.eval_modes:
        raise envs.ConfigError(f"--eval-modes is empty: give one or more of {' '.join(envs.ALL_MODES)}")
    if len(set(args.eval_modes)) < len(args.eval_modes):
        raise envs.ConfigError(f"--eval-modes {' '.join(args.eval_modes)}: a mode is listed twice")
    for name in ("video_easy_dir", "video_hard_dir", "davis_dir"):
        if getattr(args, name) and not os.path.isdir(getattr(args, name)):
            raise envs.ConfigError(f"{as_flag(name, getattr(args, name))}: no such folder")
    for mode in args.eval_modes:
        envs.check_args(args.env_id, mode, **env_flags(args, mode))
    for check in script.checks:
        check(args)
    if evaluated:
        if os.path.isdir(args.eval_csv) or not os.path.isdir(os.path.dirname(args.eval_csv) or "."):
            raise envs.ConfigError(f"--eval-csv {args.eval_csv}: give a file name in an existing folder")
        return args, None, evaluated
    run_dir = os.path.join(args.runs_dir, args.run_name)
    if resumed and args.total_timesteps < resumed["step"]:
        raise envs.ConfigError(f"--total-timesteps {args.total_timesteps} is below the checkpoint's step {resumed['step']}")
    if not resumed and os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
        raise envs.ConfigError(
            f"{run_dir} already holds a run: continue it with --resume {os.path.join(run_dir, 'checkpoint.pt')}, or give another --run-name"
        )
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise envs.ConfigError(
            f"cannot make the run folder {run_dir} ({e.strerror}): check --runs-dir and --run-name"
        ) from None
    return args, resumed, None


CROP_MARGIN = 16  # RAD and SODA render 100 px for 84-px crops (DMC-GB's arguments.py: image_size 100, crop 84)


def render_size(args):
    """The frames' size as rendered: the networks' image_size, plus CROP_MARGIN where the update random-crops."""
    return args.image_size + (CROP_MARGIN if args.augmentation == "crop" else 0)


def env_flags(args, mode="train"):
    """The keyword arguments of envs.make_env that the run's flags set, for an env of `mode`."""
    video_dir = {"video_easy": args.video_easy_dir, "video_hard": args.video_hard_dir}.get(mode)
    flags = dict(action_repeat=args.action_repeat, frame_stack=args.frame_stack, image_size=render_size(args))
    return flags if mode == "train" else flags | dict(video_dir=video_dir, davis_dir=args.davis_dir)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
def save_checkpoint(path, algorithm, agent, args, step, wall_time_s, buffer=None, burst_updates=0):
    """Networks, optimisers, temperature, step, args, training wall time so far and RNG states (and
    how many updates of the first-updates burst an interrupt left done), written atomically: a crash
    (or a second Ctrl-C) while saving leaves the previous checkpoint intact."""
    parts = {f.name: getattr(agent, f.name) for f in dataclasses.fields(agent)}
    state = {
        "algorithm": algorithm,
        "args": dataclasses.asdict(args),
        "step": step,
        "wall_time_s": wall_time_s,
        "burst_updates": burst_updates,
        "agent": {
            name: part.detach() if isinstance(part, torch.Tensor) else part.state_dict()
            for name, part in parts.items()
            if part is not None
        },
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            # The run's own GPU only (cuda:0, the first visible): a checkpoint resumed where another number of GPUs
            # is visible (a Slurm job with one GPU) must restore it; all GPUs' states would not fit there.
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        },
        "buffer": buffer_state(buffer) if buffer is not None else None,
    }
    tmp = f"{path}.tmp"
    with CONSOLE.waiting(f"writing {path}"):  # with a large replay buffer, a while
        torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, algorithm):
    """Read a checkpoint written by the script `algorithm` (or by one of several: a tuple of names).
    Any problem is a one-line ConfigError."""
    accepted = (algorithm,) if isinstance(algorithm, str) else tuple(algorithm)
    scripts = " or ".join(f"{name}.py" for name in accepted)
    if not os.path.isfile(path):
        raise envs.ConfigError(f"checkpoint not found: {path}")
    try:
        with CONSOLE.waiting(f"reading {path}"):
            state = torch.load(path, map_location="cpu", weights_only=False)
        written_by, _ = state["algorithm"], state["args"]["env_id"]
    except Exception as e:
        raise envs.ConfigError(
            f"cannot read checkpoint {path} ({type(e).__name__}): is it a checkpoint of {scripts}?"
        ) from None
    if written_by not in accepted:
        raise envs.ConfigError(f"checkpoint {path} was written by {written_by}.py, not {scripts}")
    return state


def buffer_state(buffer):
    """The replay buffer's filled slots (its ARRAYS), cursor and sampling RNG."""
    arrays = {k: getattr(buffer, k)[: len(buffer)] for k in buffer.ARRAYS}
    return {**arrays, "cursor": buffer.cursor, "full": buffer.full, "rng": buffer.rng.bit_generator.state}


def load_buffer_state(buffer, state):
    for k in buffer.ARRAYS:
        getattr(buffer, k)[: len(state[k])] = state[k]
    buffer.cursor, buffer.full = state["cursor"], state["full"]
    buffer.rng.bit_generator.state = state["rng"]


def restore(agent, state, buffer=None):
    """Load networks, optimisers, temperature and global RNG states (and the buffer, if saved) from
    the checkpoint `state` into `agent` (None: no checkpoint, nothing to do)."""
    if state is None:
        return
    for name, value in state["agent"].items():
        if isinstance(value, torch.Tensor):
            with torch.no_grad():
                getattr(agent, name).copy_(value)
        else:
            getattr(agent, name).load_state_dict(value)
    if buffer is not None and state["buffer"] is not None:
        load_buffer_state(buffer, state["buffer"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        cuda = state["rng"]["cuda"]
        # Checkpoints before 2026-12-07 hold every visible GPU's state: the run trained on the first.
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, (list, tuple)) else cuda)


# ---------------------------------------------------------------------------------------------
# Run files
# ---------------------------------------------------------------------------------------------
def read_args(path, script):
    """The Args of a run, read back from its args.json (as a Run writes it)."""
    with open(path) as f:
        saved = json.load(f)
    if saved.get("algorithm") != script.name:
        raise envs.ConfigError(f"{path} is from {saved.get('algorithm')}.py, not {script.name}.py")
    fields = {f.name for f in dataclasses.fields(script.Args)}
    return script.Args(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in fields})


def write_json(path, data):
    """Written atomically (temp file + rename): a reader never sees half a file."""
    with open(f"{path}.tmp", "w") as f:
        json.dump(data, f, indent=2)
    os.replace(f"{path}.tmp", path)


def open_rows(path, columns, previous=None, up_to_step=0):
    """A CSV file with `columns`, open for appending rows. A resumed run carries over the rows of
    `previous` (the same file in its checkpoint's folder) up to its checkpoint's step: a run killed
    after an evaluation but before its checkpoint trains that stretch again. Returns the file and
    the rows kept."""
    rows = []
    if previous and os.path.isfile(previous):
        with open(previous, newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["step"]) <= up_to_step]
    with open(f"{path}.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(f"{path}.tmp", path)
    return open(path, "a", newline=""), rows


def open_evaluations(path, previous=None, up_to_step=0):
    """evaluations.csv, open for appending a row per evaluation episode (see open_rows). Returns the
    file, the step of the last evaluation kept, and its mean return per mode."""
    csv_file, rows = open_rows(path, EVALUATION_COLUMNS, previous, up_to_step)
    last_step = max((int(row["step"]) for row in rows), default=0)
    last = collections.defaultdict(list)
    for row in rows:
        if int(row["step"]) == last_step:
            last[row["mode"]].append(float(row["return"]))
    return csv_file, last_step, {mode: float(np.mean(r)) for mode, r in last.items()}


def write_evaluation(csv_file, returns, step, frames):
    """Append a row per episode and flush, so that a killed run keeps what it evaluated."""
    csv.writer(csv_file).writerows(
        [step, frames, mode, episode, float(r)]
        for mode, episode_returns in returns.items()
        for episode, r in enumerate(episode_returns)
    )
    csv_file.flush()


def write_saliency(csv_file, saliency, step, frames):
    """Append a row per mode of where the saliency landed ({mode: (mask_on_agent, agent_share, images)})."""
    csv.writer(csv_file).writerows(
        [step, frames, mode, f"{on:.6f}", f"{share:.6f}", images] for mode, (on, share, images) in saliency.items()
    )
    csv_file.flush()


def mask_on_agent(mask, agent_pixels):
    """Where a saliency mask lands, as pixel counts per sample over its stacked frames: (on the agent,
    in the mask, of the agent, all). `mask`: saliency_mask's (B, 3F, H, W), each frame's mask repeated
    over its 3 channels; `agent_pixels`: (B, F, H, W) bool, the envs' agent_masks()."""
    per_frame = mask[:, ::3]
    counts = (per_frame & agent_pixels, per_frame, agent_pixels, torch.ones_like(agent_pixels))
    return torch.stack([c.flatten(1).sum(1) for c in counts], dim=1)


def saliency_shares(modes, counts, images):
    """{mode: (share of the mask on the agent, agent's share of the image, images measured)} from the
    summed mask_on_agent counts of each mode ({} when no frame was measured)."""
    if not images:
        return {}
    return {mode: (c[0] / max(c[1], 1), c[2] / c[3], images) for mode, c in zip(modes, counts.tolist())}


def saliency_path(eval_csv):
    """Where --eval-checkpoint writes where the saliency landed: beside its episode rows."""
    return f"{os.path.splitext(eval_csv)[0]}_saliency.csv"


def buffer_capacity(args, episode_steps, resumed=None):
    """Frames to reserve: --buffer-size, or what the run can store if less (a frame per step plus
    one per episode start; were it short, the ring would only overwrite its oldest frames). A
    restored buffer keeps its ring as saved (its size if it had wrapped)."""
    episodes = args.total_timesteps // episode_steps + 2 if episode_steps else args.total_timesteps + 1
    capacity = min(args.buffer_size, args.total_timesteps + episodes)
    saved = resumed["buffer"] if resumed else None
    if saved is not None:
        capacity = len(saved["frames"]) if saved["full"] else max(capacity, len(saved["frames"]))
    return capacity


def action_repeat(args):
    """Physics steps per agent step: the flag's, or the domain's default."""
    return args.action_repeat or envs.default_action_repeat(args.env_id)


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------
class Interrupted(Exception):
    """main() stopped on SIGINT, SIGTERM or SIGUSR1 after writing its checkpoint. The script exits
    with `exit_code` = 128 + the signal's number (130, 143, 138), as a shell reports a killed job."""

    def __init__(self, signum, step, checkpoint):
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.checkpoint, self.exit_code = signum, step, checkpoint, 128 + signum


@contextlib.contextmanager
def exit_codes():
    """Around a script's main() on the command line: bad input (envs.ConfigError) exits 1 with one
    `error:` line on stderr; a stop signal (Interrupted) exits 128 + the signal's number."""
    try:
        yield
    except envs.ConfigError as e:
        sys.exit(f"error: {e}")
    except Interrupted as e:
        ignore_stop_signals()
        sys.exit(e.exit_code)


def ignore_stop_signals():
    """Once a stop has been honoured (checkpoint written, `interrupted at step N` printed), the same
    signal may come again while the process exits: a SIGTERM to a whole process group reaches the
    job and also submitit's controller, which forwards it, and the sweep's launcher repeats its stop
    each second. Ignored from here on, a repeat cannot break into the exit (an exception printed
    from an atexit callback: a log that looks like a crash when nothing was lost)."""
    for signum in envs.STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def stop_signals():
    """While the block runs, SIGINT, SIGTERM and SIGUSR1 only set `stop.signum`: the loop stops
    cleanly at the next check, and a second signal while saving changes nothing. Installed in the
    main thread only (the one Python lets set handlers: a launcher may call main() from another);
    the previous handlers come back when the block ends."""
    stop = types.SimpleNamespace(signum=None)

    def record(signum, frame):
        stop.signum = signum

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, record) for signum in envs.STOP_SIGNALS} if in_main_thread else {}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


# ---------------------------------------------------------------------------------------------
# The console
# ---------------------------------------------------------------------------------------------
class Console:
    """Lines on stdout, and the clock that keeps it from going silent for more than QUIET_SECONDS: a
    loop asks `due()` at each of its steps, which says whether to print now, before the next step
    would end past QUIET_SECONDS of silence (a step can take seconds: an update of the paper-size
    networks on a CPU, a batched evaluation step)."""

    def __init__(self):
        self.last_line = self.last_check = time.time()  # from import: the start-up counts
        self.step_s = 0.0  # seconds between the last two checks

    def print(self, text):
        print(text, flush=True)
        self.last_line = time.time()

    def due(self):
        now = time.time()
        self.step_s, self.last_check = now - self.last_check, now
        return now - self.last_line + self.step_s > QUIET_SECONDS

    @contextlib.contextmanager
    def waiting(self, what):
        """Around a call that blocks with no chance to print (the eval workers' start): a line from a
        thread whenever QUIET_SECONDS pass in silence (at most one a second)."""
        done, since = threading.Event(), time.time()

        def beat():
            while not done.wait(max(1.0, self.last_line + QUIET_SECONDS - time.time())):
                if time.time() - self.last_line >= QUIET_SECONDS:
                    self.print(f"{what}: {duration(time.time() - since)} so far")

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


CONSOLE = Console()  # one console per process


def heartbeat(text):
    """Print `text` if the console would otherwise stay silent too long (see Console.due); for loops
    that print nothing of their own, such as an evaluation's episodes."""
    if CONSOLE.due():
        CONSOLE.print(text)


def duration(seconds):
    """'3h 05min' or '4min 12s'."""
    minutes = int(seconds) // 60
    return f"{minutes // 60}h {minutes % 60:02d}min" if minutes >= 60 else f"{minutes}min {int(seconds) % 60:02d}s"


def results_table(returns, saliency=None):
    """Mean +- std of the return per mode and, where measured, the share of the saliency mask on the
    agent against the agent's share of the image (what a mask blind to the agent would get)."""
    saliency = saliency or {}
    on_agent = f"  {'mask on agent (chance)':>22}" if saliency else ""
    rows = [f"{'mode':<12} {'return':>16}{on_agent}"]
    for mode, r in returns.items():
        row = f"{mode:<12} {r.mean():>8.1f} +- {r.std():<5.1f}"
        if mode in saliency:
            row += f"  {100 * saliency[mode][0]:>13.1f}% ({100 * saliency[mode][1]:.1f}%)"
        rows.append(row.rstrip())
    return "\n".join(rows)


def bytes_per_frame(buffer):
    """The replay buffer's memory per frame: a slot of each of its arrays."""
    return sum(getattr(buffer, k)[0].nbytes for k in buffer.ARRAYS)


def seeded_device(args):
    """A training script's start: the global RNGs seeded from --seed (python, numpy, torch: what draws from no
    stream of its own, as network init), the cuda settings applied, and the run's device returned, with EGL set to
    render on it before the first env is made."""
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    cuda_settings(args)  # cudnn determinism or benchmarking, TF32
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    render_on(device)  # EGL on the GPU the run trains on
    return device


def cuda_settings(args):
    """The GPU's numerics, as --torch-deterministic and --tf32 say (no effect on a CPU). Deterministic: cudnn's
    deterministic algorithms, none picked by timing (benchmarking could pick another algorithm on the next run).
    Otherwise cudnn.benchmark: the shapes never change, so the fastest algorithm is timed once per shape. TF32 for
    convs and matmuls alike, off unless --tf32 (PyTorch's defaults would allow it for convs only)."""
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.backends.cudnn.benchmark = not args.torch_deterministic
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32


EGL_CUDA_DEVICE_NV = 0x323A  # EGL_NV_device_cuda: the CUDA device number of an EGL device


def egl_device_of_cuda(cuda_index):
    """The number, as MUJOCO_EGL_DEVICE_ID counts EGL's devices, of the one whose CUDA device number (the NVIDIA
    driver's EGL_CUDA_DEVICE_NV, in this process's numbering: CUDA_VISIBLE_DEVICES applied) is `cuda_index`; None
    where no device says (Mesa, a driver without EGL_NV_device_cuda) or EGL cannot be asked."""
    try:
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # as dm_control sets it for MUJOCO_GL=egl
        from dm_control._render.pyopengl import egl_ext
        from OpenGL import EGL

        prototype = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_ssize_t))
        query = prototype(EGL.eglGetProcAddress("eglQueryDeviceAttribEXT"))
        for number, device in enumerate(egl_ext.eglQueryDevicesEXT()):
            value = ctypes.c_ssize_t(-1)
            if (
                query(ctypes.cast(device, ctypes.c_void_p).value, EGL_CUDA_DEVICE_NV, ctypes.byref(value))
                and value.value == cuda_index
            ):
                return number
    except Exception:  # no EGL, no extension: EGL's own choice stands
        return None
    return None


def render_on(device):
    """Render where the run trains: on a CUDA device, with MUJOCO_GL=egl and no MUJOCO_EGL_DEVICE_ID of the user's,
    set MUJOCO_EGL_DEVICE_ID to the EGL device that is the run's GPU, so that its env and eval workers (they
    inherit the environment) do not render on another GPU. EGL's numbering need not be CUDA's (the NVIDIA driver
    may list only the GPUs CUDA_VISIBLE_DEVICES leaves, or all of them), so the device is found by the CUDA
    number it reports (`egl_device_of_cuda`); where none reports one, EGL's first device. Call before the first
    env is made. Returns the line the start block shows."""
    if device.type != "cuda":
        return None
    if os.environ.get("MUJOCO_GL") != "egl":
        return f"rendering: MUJOCO_GL={os.environ.get('MUJOCO_GL')}"
    if "MUJOCO_EGL_DEVICE_ID" not in os.environ:
        cuda_index = (
            device.index if device.index is not None else 0
        )  # "cuda": the current device, 0 (the scripts never set it)
        number = egl_device_of_cuda(cuda_index)
        if number is None:
            return f"rendering: EGL's first device (none reports CUDA device {cuda_index})"
        os.environ["MUJOCO_EGL_DEVICE_ID"] = str(number)
    return f"rendering: EGL device {os.environ['MUJOCO_EGL_DEVICE_ID']}"


def describe_start(algorithm, args, device, run_dir, agent, buffer):
    """The start block: where the run goes, on what, how big, and what it reserves."""
    trained = [getattr(agent, f.name) for f in dataclasses.fields(agent) if f.name != "critic_target"]
    parameters = sum(p.numel() for part in trained if isinstance(part, torch.nn.Module) for p in part.parameters())
    on = (
        f"GPU {torch.cuda.get_device_name(device)}, {render_on(device)}"
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} torch threads"
    )
    if os.environ.get("CUDA_VISIBLE_DEVICES"):  # what a sweep's or Slurm's job was given
        on += f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']})"
    frame_bytes = bytes_per_frame(buffer)
    size = buffer.capacity * frame_bytes
    size = f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
    crops = f", random {args.image_size}-px crops when updating, the centre when acting" if args.augmentation == "crop" else ""
    CONSOLE.print(
        f"{algorithm}.py on {args.env_id} (seed {args.seed}), run folder {run_dir}\n"
        f"device: {on}\n"
        f"networks: {args.num_conv_layers} convs x {args.num_filters} filters, projection {args.projection_dim}, "
        f"hidden {args.hidden_dim}: {parameters / 1e6:.2f} M parameters trained\n"
        f"frames: rendered at {render_size(args)} px{crops}\n"
        f"replay buffer: {buffer.capacity} frames x {frame_bytes} bytes = {size} (--buffer-size "
        f"{args.buffer_size}, or what {args.total_timesteps} steps store if less)\n"
        f"evaluation: every {args.eval_freq} steps, {args.eval_episodes} episodes on {' '.join(args.eval_modes)}, "
        f"in {len(args.eval_modes)} worker processes (starting)"
    )
    defaults = type(args)
    if device.type == "cpu" and (args.num_conv_layers, args.num_filters) == (defaults.num_conv_layers, defaults.num_filters):
        CONSOLE.print(
            "note: paper-size networks on a CPU take about 1 s (SAC) to 2.5 s (SGQN) per update on 2 cores: 500k steps "
            "is days to weeks, a GPU job; for a run of a few minutes see README 'Quick look on a laptop'"
        )


# ---------------------------------------------------------------------------------------------
# A training run's bookkeeping
# ---------------------------------------------------------------------------------------------
class Run:
    """The files and the console of one training run, for the script's loop to call at each step: it
    writes args.json, evaluations.csv, the TensorBoard scalars, checkpoint.pt and summary.json in the
    run folder, says when an evaluation or a checkpoint is due and how many updates a step makes
    (the first-updates burst, which a checkpoint cut short remembers), and prints the start block,
    progress lines (steps per second and ETA from the recent steps, evaluations left out) and the end."""

    def __init__(self, script, args, resumed, started, device, agent, buffer):
        self.script, self.args, self.started = script, args, started
        self.run_dir = os.path.join(args.runs_dir, args.run_name)
        self.checkpoint = os.path.join(self.run_dir, "checkpoint.pt")
        self.video_dir = os.path.join(self.run_dir, "videos") if args.capture_video else None
        self.start_step = resumed["step"] if resumed else 0
        self.action_repeat = action_repeat(args)
        write_json(os.path.join(self.run_dir, "args.json"), {**dataclasses.asdict(args), "algorithm": script.name})
        previous_csv = os.path.join(os.path.dirname(args.resume), "evaluations.csv") if resumed else None
        evaluations = open_evaluations(os.path.join(self.run_dir, "evaluations.csv"), previous_csv, self.start_step)
        self.evaluations, self.last_evaluated, self.last_eval = evaluations
        previous_csv = os.path.join(os.path.dirname(args.resume), "saliency.csv") if resumed else None
        self.saliency = open_rows(os.path.join(self.run_dir, "saliency.csv"), SALIENCY_COLUMNS, previous_csv, self.start_step)[
            0
        ]
        describe_start(script.name, args, device, self.run_dir, agent, buffer)
        self.wall_time_before = resumed.get("wall_time_s", 0.0) if resumed else 0.0
        self.burst_updates = resumed.get("burst_updates", 0) if resumed else 0
        if resumed and len(buffer):
            CONSOLE.print(f"resumed at step {self.start_step} with {len(buffer)} frames in the replay buffer")
        elif resumed:
            CONSOLE.print(
                f"resumed at step {self.start_step}; its replay buffer was not saved (--save-buffer): "
                f"updates wait for {args.learning_starts} new frames (--learning-starts)"
            )
        self.tracking = start_tracking(args, self.run_dir, resumed) if args.track else None  # before the writer: it syncs it
        # A resumed run drops what an earlier process logged after its checkpoint's step (the scalars at
        # that step, its last evaluation among them, were logged before the checkpoint and stay).
        self.writer = SummaryWriter(self.run_dir, purge_step=self.start_step + 1 if resumed else None)
        if not resumed:
            table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
        self.last_return, self.saved_step, self.updating_since = None, None, None  # last_return: no episode ended yet

    def make_eval_envs(self, seed):
        """The eval workers (see make_eval_envs); the training loop's clock starts once they are up."""
        eval_envs = make_eval_envs(self.args, seed)
        self.loop_start = time.time()
        self.recent = collections.deque([(self.loop_start, self.start_step)], maxlen=30)  # (time, step) of recent lines
        return eval_envs

    def wall_time(self):
        return self.wall_time_before + time.time() - self.started

    def evaluation_due(self, step):
        """Every eval_freq steps and at the end; a resumed run first makes an evaluation that an
        interrupt cut short (at its checkpoint's step)."""
        args = self.args
        return (step % args.eval_freq == 0 or step == args.total_timesteps) and step > self.last_evaluated

    def evaluated(self, step, returns, saliency):
        """evaluations.csv, saliency.csv, TensorBoard and the console get the returns and where the
        saliency landed; the rate starts again after it."""
        write_evaluation(self.evaluations, returns, step, step * self.action_repeat)
        write_saliency(self.saliency, saliency, step, step * self.action_repeat)
        for mode, r in returns.items():
            self.writer.add_scalar(f"eval/{mode}/episodic_return", r.mean(), step)
        for mode, (on_agent, agent_share, _) in saliency.items():
            self.writer.add_scalar(f"eval/{mode}/saliency_on_agent", on_agent, step)
            self.writer.add_scalar(f"eval/{mode}/agent_share", agent_share, step)
        CONSOLE.print(f"evaluation at step {step}:\n{results_table(returns, saliency)}")
        self.last_eval, self.last_evaluated = {mode: float(r.mean()) for mode, r in returns.items()}, step
        self.recent = collections.deque([(time.time(), step)], maxlen=self.recent.maxlen)

    def save_due(self, step):
        """Every save_freq steps and at the end (never at the step a run starts or resumes from)."""
        args = self.args
        return (step % args.save_freq == 0 or step == args.total_timesteps) and step > self.start_step

    def save(self, agent, step, buffer):
        """checkpoint.pt (with the replay buffer under --save-buffer; checkpoint_step{N}.pt too, without
        it, under --keep-checkpoints: for looking back at training, e.g. where the saliency lands)."""
        args, name = self.args, self.script.name
        save_checkpoint(self.checkpoint, name, agent, args, step, self.wall_time(), buffer if args.save_buffer else None)
        if args.keep_checkpoints:
            save_checkpoint(os.path.join(self.run_dir, f"checkpoint_step{step}.pt"), name, agent, args, step, self.wall_time())
        CONSOLE.print(f"checkpoint saved: {self.checkpoint} (step {step})")
        self.saved_step = step

    def episode_ended(self, step, episode_return, episode_length):
        self.writer.add_scalar("charts/episodic_return", episode_return, step)
        self.writer.add_scalar("charts/episodic_length", episode_length, step)
        self.last_return = episode_return

    def updates_at(self, step):
        """Updates to make at this step: one, except the first-updates burst at step learning_starts,
        one per random step (as DMC-GB and the original SGQN), less those an interrupted burst made."""
        self.updating_since = self.updating_since or step + 1
        self.burst_start = time.time()
        self.updates = self.args.learning_starts - self.burst_updates if step == self.args.learning_starts else 1
        return self.updates

    def updated(self, step, i):
        """After update i of the step's: the burst's count (a checkpoint keeps it), its progress."""
        updates = self.updates
        if updates > 1:
            self.burst_updates += 1
            if CONSOLE.due():
                per_update = (time.time() - self.burst_start) / (i + 1)
                to_go = duration(per_update * (updates - i - 1))
                # The run's updates left, at the burst's pace (its updates are all full, even-step ones, when
                # learning_starts is even: then more than the run's mix of odd and even steps costs); env steps
                # and evaluations come on top.
                updates_to_go = duration(per_update * (updates - i - 1 + self.args.total_timesteps - step - 1))
                CONSOLE.print(
                    f"step {step}/{self.args.total_timesteps}  first updates {i + 1}/{updates}, {to_go} to go; "
                    f"the run's updates about {updates_to_go} more"
                )

    def step_ended(self, step, metrics):
        """After `step` steps: the losses to TensorBoard every log_freq steps; a progress line every
        console_freq steps, at the first step with updates, and whenever the console would go quiet."""
        args = self.args
        if step % args.log_freq == 0 and metrics:
            for name, value in metrics.items():
                self.writer.add_scalar(name, value.item(), step)
            self.writer.add_scalar("charts/SPS", (step - self.start_step) / (time.time() - self.loop_start), step)
            self.writer.add_scalar("charts/frames", step * self.action_repeat, step)
        if CONSOLE.due() or step % args.console_freq == 0 or step == self.updating_since:
            CONSOLE.print(self.progress_line(step))

    def progress_line(self, step):
        """Steps per second come from the last few lines (`recent`, restarted after each evaluation);
        the ETA only once every step makes an update (from step `updating_since`), and from those
        steps only: steps without updates are far faster."""
        recent, updating_since = self.recent, self.updating_since
        recent.append((time.time(), step))
        while updating_since is not None and recent[0][1] < updating_since:
            recent.popleft()
        (t0, s0), (t1, s1) = recent[0], recent[-1]
        sps = f"{(s1 - s0) / (t1 - t0):.2f}" if s1 > s0 else "-"
        if updating_since is None:
            eta = "after the first updates"
        else:
            eta = duration((self.args.total_timesteps - step) * (t1 - t0) / (s1 - s0)) if s1 > s0 else "-"
        last_return = "-" if self.last_return is None else f"{self.last_return:.1f}"
        evaluation = "".join(f" {mode} {r:.1f}" for mode, r in self.last_eval.items())
        return f"step {step}/{self.args.total_timesteps}  SPS {sps}  ETA {eta}  last return {last_return}" + (
            f"  eval{evaluation}" if evaluation else ""
        )

    def finish(self, step, agent, buffer, signum, *to_close):
        """Finished, or interrupted (by `signum`): the checkpoint, the envs in `to_close`, the files, one
        line on the console. Returns the run folder; raises Interrupted if the run stopped early."""
        args = self.args
        finished = step == args.total_timesteps and self.last_evaluated == step
        if self.saved_step != step:
            burst_updates = self.burst_updates if step == args.learning_starts else 0
            buffer = buffer if args.save_buffer else None
            save_checkpoint(self.checkpoint, self.script.name, agent, args, step, self.wall_time(), buffer, burst_updates)
        for env in to_close:
            env.close()
        self.writer.close()
        if self.tracking:
            self.tracking.finish()  # after the writer: its last scalars are synced
        self.evaluations.close()
        self.saliency.close()
        wall_time = self.wall_time()
        summary = {
            "status": "finished" if finished else "interrupted",
            "step": step,
            "total_timesteps": args.total_timesteps,
            "wall_time_s": round(wall_time, 1),
            "last_evaluation": self.last_eval,
            "checkpoint": self.checkpoint,
            "algorithm": self.script.name,
        }
        write_json(os.path.join(self.run_dir, "summary.json"), summary)
        if not finished:
            CONSOLE.print(f"interrupted at step {step}; resume with: python {self.script.name}.py --resume {self.checkpoint}")
            raise Interrupted(signum, step, self.checkpoint)
        CONSOLE.print(
            f"finished {step} steps in {duration(wall_time)}; last evaluation:"
            + "".join(f" {mode} {r:.1f}" for mode, r in self.last_eval.items())
            + f"\ncheckpoint {self.checkpoint}, evaluations {os.path.join(self.run_dir, 'evaluations.csv')}, "
            f"TensorBoard: tensorboard --logdir {args.runs_dir}"
        )
        return self.run_dir


def start_tracking(args, run_dir, resumed):
    """--track, as CleanRL has it: a Weights & Biases run that mirrors the run's TensorBoard scalars
    (sync_tensorboard: call before the SummaryWriter is made), with Args as its config and the run
    folder's name as its name. Its id is kept in the run folder (WANDB_ID_FILE): a resumed run, read
    from its checkpoint's folder, continues the same W&B run. W&B's own files go to
    `{runs_dir}/wandb`; WANDB_MODE=offline keeps the run there (`wandb sync` uploads it later)."""
    import wandb  # optional: checked_args has said how to install it

    previous = os.path.join(os.path.dirname(args.resume), WANDB_ID_FILE) if resumed else None
    if previous and os.path.exists(previous):
        with open(previous) as f:
            run_id = f.read().strip()
    else:
        run_id = secrets.token_hex(4)  # 8 characters, as W&B's own ids
    with open(os.path.join(run_dir, WANDB_ID_FILE), "w") as f:
        f.write(run_id + "\n")
    return wandb.init(
        project=args.wandb_project_name,
        entity=args.wandb_entity,
        name=args.run_name,
        id=run_id,
        resume="allow",
        config=dataclasses.asdict(args),
        sync_tensorboard=True,
        # Beside the run folders, not in one: W&B copies the event files into its folder, and a copy
        # inside the run folder (TensorBoard's logdir) would be synced again, from its first scalar.
        dir=args.runs_dir,
    )


# ---------------------------------------------------------------------------------------------
# --eval-checkpoint: evaluation without training
# ---------------------------------------------------------------------------------------------
def start_evaluation(agent, args, state, seed):
    """The checkpoint's networks into `agent`, a line on what is evaluated, the eval workers."""
    restore(agent, state)
    CONSOLE.print(
        f"evaluating {args.eval_checkpoint} (step {state['step']}, {args.env_id}): {args.eval_episodes} episodes per mode"
    )
    return make_eval_envs(args, seed)


def end_evaluation(args, state, returns, saliency, signum, *to_close):
    """The envs in `to_close` closed; the returns (None: cut short by `signum`, which raises Interrupted)
    to --eval-csv, a row per episode, where the saliency landed beside it (saliency_path), and both as
    a table per mode. Returns the returns."""
    for env in to_close:
        env.close()
    step = state["step"]
    if returns is None:
        CONSOLE.print(f"interrupted: evaluation of {args.eval_checkpoint} abandoned")
        raise Interrupted(signum, step, args.eval_checkpoint)
    with open_evaluations(args.eval_csv)[0] as csv_file:
        write_evaluation(csv_file, returns, step, step * action_repeat(args))
    with open_rows(saliency_path(args.eval_csv), SALIENCY_COLUMNS)[0] as csv_file:
        write_saliency(csv_file, saliency, step, step * action_repeat(args))
    CONSOLE.print(results_table(returns, saliency))
    CONSOLE.print(f"episode returns written to {args.eval_csv}, where the saliency landed to {saliency_path(args.eval_csv)}")
    return returns


# ---------------------------------------------------------------------------------------------
# Processes and memory
# ---------------------------------------------------------------------------------------------
def make_eval_envs(args, seed):
    """One env per evaluated mode, each seeded with its own word of `seed` (a SeedSequence): the word at
    the mode's place in envs.ALL_MODES, so that a mode plays the same episodes whichever modes are
    evaluated beside it (--eval-modes train video_hard while training, all five at the end). Each in
    its own worker process so that the modes render in parallel on spare cores (spawned, so each
    worker makes its own GL context). The workers start with the stop signals blocked and then
    ignore them (envs.quiet_worker): a Ctrl-C reaches the whole process group, and the parent
    stops them itself. Their start takes a while (each imports torch and builds its env): the
    console gets a line every QUIET_SECONDS meanwhile."""
    words = seed.generate_state(len(envs.ALL_MODES))
    env_fns = [
        functools.partial(envs.make_env, args.env_id, int(words[envs.ALL_MODES.index(mode)]), mode, **env_flags(args, mode))
        for mode in args.eval_modes
    ]
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, envs.STOP_SIGNALS)
    try:
        with CONSOLE.waiting(f"evaluation workers starting ({len(env_fns)})"):
            eval_envs = gym.vector.AsyncVectorEnv(env_fns, context="spawn", worker=envs.quiet_worker)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    # Closed at exit (a second close does nothing): after an unexpected exception, multiprocessing's
    # own exit handler would SIGTERM them, which they ignore, and wait for them forever.
    atexit.register(eval_envs.close)
    return eval_envs


def write_video(path, frames, upscale=4):
    """mp4 of HWC uint8 frames, upscaled by pixel repetition so players show them crisply."""
    import imageio.v2 as imageio  # only needed with --capture-video

    os.makedirs(os.path.dirname(path), exist_ok=True)
    big = [f.repeat(upscale, axis=0).repeat(upscale, axis=1) for f in frames]
    imageio.mimwrite(path, big, fps=30, macro_block_size=1)


def keep_freed_memory():
    """Make glibc keep freed memory for reuse rather than hand it back to the OS. An update
    allocates and frees activations of tens of MB (above glibc's mmap threshold); by default each
    one is unmapped when freed and the kernel zeroes fresh pages at the next update (measured in
    benchmarks/update_speed.py --default-allocator). The process keeps its peak memory instead.
    Results are unchanged. Returns False where libc is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters from glibc's malloc.h
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False
