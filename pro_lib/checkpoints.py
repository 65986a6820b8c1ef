"""Safe resumes: the one checkpoint finder and the run fingerprint every resumable stage records.

Every resumable stage (reward model, orchestrator, WIC offline / online SFT / online rounds, MORLHF)
keeps its checkpoints in one folder of its own (``<output_dir>.checkpoints``, ``.<output_dir>.work``
or ``<output_dir>/checkpoints``). When a run starts from scratch it writes ``fingerprint.json``
there: every config field that decides the result (base model, loss, learning rate, epochs, seed,
...) and a content digest of its inputs (data files, targets, base model / policy / suite /
orchestrator folders). A checkpoint is either a trl/transformers ``checkpoint-N/`` folder (complete
when its ``trainer_state.json`` is written) or PRO's ``last.pt``.

``--resume auto`` (the default) continues from the newest complete checkpoint only when the
fingerprint matches; a mismatch stops with an error naming the differing fields.
``--resume never`` starts over: what an earlier run left (its checkpoints and its output folder)
is moved to ``<name>.prev-<UTC time>`` first, so nothing already saved is deleted.

A *finished* run keeps its fingerprint in its output folder (``<output_dir>/fingerprint.json``), so
the check outlives the checkpoints (which some stages delete once the output is saved): a changed
re-run of a finished run is refused, naming what differs, instead of overwriting it; an output folder
that holds files with no fingerprint (another stage's output, an older PRO, your own files) is refused
too. :func:`output_lock` keeps a second run out of a folder another process is writing to.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pro_lib.artifacts import FINGERPRINT_FILE
from pro_lib.config import RESUME_HELP, to_dict  # noqa: F401 (RESUME_HELP public here too)
from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.io import digest_path, write_json

log = logging.getLogger(__name__)

FORMAT = "pro-fingerprint/1"
# Config fields that never change the trained weights: where things go, how often to save or log.
NOT_RESULT = frozenset({"output_dir", "resume", "progress", "save_steps", "save_total_limit", "logging_steps",
                        "report_to", "reward_batch_size", "device", "gradient_checkpointing"})
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
LAST_PT = "last.pt"  # PRO's own training loop (the orchestrator) keeps one checkpoint under this name


# -- the checkpoint finder ------------------------------------------------------------------------

def find_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint in ``folder``: ``checkpoint-N/`` with ``trainer_state.json``
    (transformers / trl; a half-written one is skipped) or ``last.pt`` (PRO's own loop)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in folder.iterdir()
                    if p.is_dir() and (m := _CKPT_RE.match(p.name))), reverse=True)
    for _, path in found:
        if is_complete(path):
            return path
        log.warning("skipping incomplete checkpoint %s (no trainer_state.json: the run was killed while "
                    "saving it)", path)
    last = folder / LAST_PT
    return last if last.is_file() else None


def is_complete(checkpoint: str | Path) -> bool:
    """Whether a transformers / trl ``checkpoint-N`` folder was saved completely (its
    ``trainer_state.json`` is written last)."""
    return (Path(checkpoint) / "trainer_state.json").is_file()


def checkpoint_step(path: str | Path | None) -> int:
    """The step of a ``checkpoint-N`` folder (0 for None or another name)."""
    m = _CKPT_RE.match(Path(path).name) if path else None
    return int(m.group(1)) if m else 0


# -- content digests --------------------------------------------------------------------------------

def digest_value(obj: Any) -> str:
    """sha256 of a JSON-able value (numpy arrays and scalars allowed)."""
    text = json.dumps(obj, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def digest_data(specs: str | Sequence[str]) -> str:
    """Identity of load_pairs specs: the content of local files ('demo' is the shipped file), else the name."""
    from pro_lib.data import demo_data_path

    parts = []
    for spec in [specs] if isinstance(specs, (str, Path)) else list(specs):
        text = str(spec)
        path = demo_data_path() if text == "demo" else Path(text.removeprefix("hh:")).expanduser()
        parts.append(f"{text}={digest_path(path)}" if path.exists() else text)
    return digest_value(parts)


def digest_model(ref: str | Path | None, *, given: Any = None) -> str | None:
    """Identity of a model (or suite) reference: the resolved folder's content (local folders, bundled
    models, ``models:/`` refs, whose alias may move), else the reference itself (hub names).
    ``given``: the object a stage received in-process instead (tests, notebooks), recorded as such."""
    if given is not None:
        return f"(in-process {type(given).__name__})"
    if ref is None:
        return None
    text = str(ref)
    if text == "minilm":
        from pro_lib.models import bundled_minilm_path

        return digest_path(bundled_minilm_path())
    if text.lower() == "smollm2":
        from pro_lib.policy import bundled_smollm2_path

        return digest_path(bundled_smollm2_path())
    if text.startswith(("models:/", "s3://")):
        from pro_lib.refs import localize

        text = str(localize(text))
    path = Path(text).expanduser()
    return digest_path(path) if path.exists() else text


# -- the fingerprint ----------------------------------------------------------------------------------

def fingerprint(cfg: Any, inputs: Mapping[str, Any] | None = None, *, ignore: Iterable[str] = ()) -> dict:
    """What decides a run's result: the config's fields (less where-to-save / how-often-to-log
    fields and ``ignore``) plus ``inputs`` (content digests, named e.g. ``data_content``)."""
    skip = NOT_RESULT | set(ignore)
    fp = {k: v for k, v in to_dict(cfg).items() if k not in skip}
    fp.update(inputs or {})
    return json.loads(json.dumps(fp, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``field: old -> new`` for every field that differs (missing on one side included)."""

    def show(v: Any) -> str:
        text = repr(v) if v is not None else "(absent)"
        return text if len(text) <= 60 else text[:57] + "..."

    keys = [k for k in list(saved) + [k for k in now if k not in saved] if k != "format"]
    return [f"{k}: {show(saved.get(k))} -> {show(now.get(k))}" for k in keys if not _same(saved.get(k), now.get(k))]


def _same(a: Any, b: Any) -> bool:
    """Equal values; two spellings of one existing path (``runs/x`` and ``./runs/x`` or its absolute
    form) are the same setting (their contents are compared by the ``*_content`` digests)."""
    if a == b:
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, str) and isinstance(b, str) and a and b and "://" not in a + b:
        try:
            pa, pb = Path(a).expanduser(), Path(b).expanduser()
            return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
        except (OSError, ValueError):
            return False
    return False


def resume_mode(value: Any) -> str:
    """'auto' or 'never' (true/false from older configs map to them)."""
    text = str(value).strip().lower()
    mode = {"true": "auto", "yes": "auto", "1": "auto", "false": "never", "no": "never", "0": "never"}.get(text, text)
    if mode not in ("auto", "never"):
        raise ConfigError(f"resume must be 'auto' or 'never', got {value!r}")
    return mode


def read_fingerprint(folder: str | Path) -> dict | None:
    p = Path(folder) / FINGERPRINT_FILE
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p} is corrupt ({exc}); pass --resume never to start over "
                              "(the old run is kept)") from None
    return data if isinstance(data, dict) else None


def move_aside(paths: Iterable[str | Path]) -> list[Path]:
    """Rename each existing path to ``<name>.prev-<UTC time>`` (never deletes); returns the new names.
    Empty folders stay; a path inside another one given moves with it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    paths = list(dict.fromkeys(Path(p).absolute() for p in paths))
    moved = []
    for p in paths:
        if not p.exists() or (p.is_dir() and not any(p.iterdir())):
            continue  # nothing saved there
        if any(q != p and q in p.parents for q in paths):
            continue  # moves with its parent folder
        target, n = p.with_name(f"{p.name}.prev-{stamp}"), 1
        while target.exists():
            n += 1
            target = p.with_name(f"{p.name}.prev-{stamp}-{n}")
        os.replace(p, target)
        moved.append(target)
    return moved


def check_fingerprint(ckpt_dir: str | Path, fp: Mapping[str, Any], found: Path | str, *, what: str) -> None:
    """Raise when the run that made ``found`` (in ``ckpt_dir``) had another fingerprint than ``fp``."""
    saved = read_fingerprint(ckpt_dir)
    if saved is None:
        raise CheckpointError(
            f"{what}: {found} has no {FINGERPRINT_FILE} (made by an older PRO or another tool), so it cannot be "
            "checked against this run's settings; pass --resume never to start over (the old run is kept)")
    diff = differences(saved, {"format": FORMAT, **fp})
    if diff:
        raise CheckpointError(
            f"{what}: the checkpoint {found} was made with other settings or inputs: {'; '.join(diff)}. "
            "Re-run with the same settings to continue it, or pass --resume never to start over "
            "(the old run is moved to <name>.prev-<time>, nothing is deleted)")


def _output_content(folder: Path, ignore: Iterable[Path] = ()) -> list[str]:
    """Names in ``folder`` an earlier run (or someone else) left there: less the fingerprint, hidden
    names (locks, temporary files, scratch folders) and ``ignore`` (e.g. the stage's checkpoint folder)."""
    if not folder.is_dir():
        return []
    skip = {Path(p).absolute() for p in ignore}
    return sorted(p.name for p in folder.iterdir()
                  if p.name != FINGERPRINT_FILE and not p.name.startswith(".") and p.absolute() not in skip)


def check_output_folder(folder: str | Path, *, what: str = "this stage") -> None:
    """An output folder that is a file (or a link to one) is refused before anything is written."""
    from pro_lib.io import check_output_dir

    check_output_dir(folder, what=what)


def check_finished(folder: str | Path, fp: Mapping[str, Any], *, what: str = "this stage",
                   ignore: Iterable[Path] = ()) -> bool:
    """Check a stage's output folder before a run writes into it. Returns True when it holds a
    finished run with the same fingerprint (nothing to redo), False when there is nothing there;
    raises when it holds a run made with other settings or files with no fingerprint, which the run
    would overwrite."""
    folder = Path(folder)
    check_output_folder(folder, what=what)
    content = _output_content(folder, ignore)
    saved = read_fingerprint(folder)
    never = ("pass --resume never to start over (the folder is moved to "
             f"{folder.name}.prev-<time>, nothing is deleted) or choose another --output-dir")
    if saved is None:
        if not content:
            return False
        shown = ", ".join(content[:5]) + (", ..." if len(content) > 5 else "")
        raise CheckpointError(
            f"{what}: the output folder {folder} already holds files ({shown}) and no {FINGERPRINT_FILE} "
            "recording the settings that made them (another stage's output, an older PRO or files of your "
            f"own): this run would overwrite them; {never}")
    diff = differences(saved, {"format": FORMAT, **fp})
    if diff and content:
        raise CheckpointError(
            f"{what}: {folder} holds an earlier run made with other settings or inputs: {'; '.join(diff)}. "
            f"Re-run with the same settings, or {never}")
    return bool(content) and not diff


def already_finished(folder: str | Path, fp: Mapping[str, Any], resume: Any = "auto", *,
                     what: str = "this stage", ckpt_dir: str | Path | None = None) -> bool:
    """Whether ``folder`` holds a finished run with this fingerprint and no checkpoint of a later
    run is pending in ``ckpt_dir`` (``--resume auto``): the stage has nothing to redo. Raises as
    :func:`check_finished` when it holds another run."""
    if resume_mode(resume) == "never" or (ckpt_dir is not None and find_checkpoint(ckpt_dir) is not None):
        return False
    if check_finished(folder, fp, what=what, ignore=[Path(ckpt_dir)] if ckpt_dir else ()):
        log.info("%s: %s already holds a finished run with the same settings and inputs; nothing to redo "
                 "(--resume never trains it again, keeping this one as %s.prev-<time>)", what, folder,
                 Path(folder).name)
        return True
    return False


def prepare_resume(ckpt_dir: str | Path, fp: Mapping[str, Any], resume: Any = "auto", *,
                   outputs: Sequence[str | Path] = (), found: Path | str | None = None,
                   what: str = "this stage", finished: str | Path | None = None) -> Path | None:
    """Decide where training starts. Returns the checkpoint to resume from, or None (from scratch).

    ``ckpt_dir``: the stage's checkpoint folder (``fingerprint.json`` lives there). ``outputs``:
    further folders an earlier run leaves (moved aside with it under ``--resume never``).
    ``found``: the stage's resumable state when it is not a checkpoint in ``ckpt_dir`` (e.g.
    finished online rounds); by default :func:`find_checkpoint`. On a fresh start the fingerprint
    is written, so a later run can check it. ``finished``: the stage's output folder; with no
    checkpoint to resume, what is there is checked (:func:`check_finished`) before it is overwritten
    (the stage writes ``fp`` into it when it finishes: :func:`record_fingerprint`).
    """
    ckpt_dir = Path(ckpt_dir)
    if finished is not None:
        check_output_folder(finished, what=what)
    if resume_mode(resume) == "never":
        moved = move_aside([ckpt_dir, *outputs])
        if moved:
            log.info("%s: starting over; the earlier run is kept in %s", what, ", ".join(map(str, moved)))
        found = None
    else:
        found = found if found is not None else find_checkpoint(ckpt_dir)
        if found is None and finished is not None:
            check_finished(finished, fp, what=what, ignore=[ckpt_dir])
    if found is not None:
        check_fingerprint(ckpt_dir, fp, found, what=what)
        log.info("%s: resuming from %s (same settings and inputs)", what, found)
        return Path(found)
    record_fingerprint(ckpt_dir, fp)
    return None


def train_or_restore(trainer, resume_from: str | Path | None):
    """``trainer.train(resume_from_checkpoint=...)``, except that a run resumed from the checkpoint of a
    *finished* run (global step at max_steps) stops once the checkpoint is loaded: transformers would
    take one more optimizer step when it resumes at max_steps in mid-epoch, so re-running a finished
    run would change it. Returns transformers' ``TrainOutput`` (for a finished run: the mean logged loss)."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import TrainOutput

    class Finished(Exception):
        pass

    class StopIfFinished(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # weights and optimizer are loaded by now
            if state.max_steps and state.global_step >= state.max_steps:
                raise Finished

    stop = StopIfFinished()
    trainer.add_callback(stop)
    try:
        return trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except Finished:
        log.info("%s is the last checkpoint of a finished run: nothing left to train", resume_from)
        losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
        return TrainOutput(trainer.state.global_step, sum(losses) / len(losses) if losses else float("nan"), {})
    finally:
        trainer.remove_callback(stop)


# -- one run per output folder ------------------------------------------------------------------------

def lock_path(out: str | Path) -> Path:
    """The lock file of an output folder: ``.<name>.lock`` beside it (so moving the folder aside under
    ``--resume never`` keeps the lock, and a folder that does not exist yet can be locked)."""
    out = Path(out).absolute()
    return out.with_name(f".{out.name}.lock")


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: "
                f"{info.get('command') or '?'}")
    except (json.JSONDecodeError, AttributeError):
        return text.strip()[:200] or "unknown process"


@contextlib.contextmanager
def output_lock(out: str | Path, *, what: str = "this stage"):
    """Hold an exclusive lock on the output folder ``out`` (``fcntl.flock`` on :func:`lock_path`, across
    processes) while a run writes into it; a second run into the same folder is refused, naming the
    first. The lock goes with the process: one left by a killed run is stale, taken over and named
    in a warning. Under ``torchrun`` / ``accelerate`` only rank 0 locks (the ranks share the folder)."""
    import fcntl

    if int(os.environ.get("RANK", "0") or 0) != 0:
        yield
        return
    out = Path(out)
    check_output_folder(out, what=what)
    lock = lock_path(out)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot write into {lock.parent} ({exc.strerror}); choose a writable "
                          "--output-dir") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            raise CheckpointError(
                f"{what}: another run is writing to {out} ({holder}); wait for it to finish or choose another "
                f"--output-dir (two runs in one folder would mix their checkpoints). Lock file: {lock}") from None
        stale = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        if stale.strip():
            log.warning("%s: %s was locked by a run that ended without releasing it (%s): killed, so its lock "
                        "is stale and taken over; what it left is checked against this run's settings",
                        what, out, _holder(stale))
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released cleanly: not stale
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def exclusive_output(what: str):
    """Decorator for a stage ``fn(cfg, ...)``: runs under :func:`output_lock` on ``cfg.output_dir``."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(cfg, *args, **kwargs):
            with output_lock(cfg.output_dir, what=what):
                return fn(cfg, *args, **kwargs)

        return wrapper

    return deco


def record_fingerprint(ckpt_dir: str | Path, fp: Mapping[str, Any]) -> Path:
    """Write ``fingerprint.json`` into a stage's checkpoint folder (atomically)."""
    return write_json(Path(ckpt_dir) / FINGERPRINT_FILE, {"format": FORMAT, **fp})


__all__ = ["find_checkpoint", "is_complete", "LAST_PT", "checkpoint_step", "digest_path", "digest_value", "digest_data",
           "digest_model",
           "fingerprint", "differences", "resume_mode", "read_fingerprint", "move_aside", "check_fingerprint",
           "prepare_resume", "record_fingerprint", "train_or_restore", "RESUME_HELP", "FINGERPRINT_FILE",
           "check_output_folder", "check_finished", "already_finished", "lock_path", "output_lock",
           "exclusive_output"]
