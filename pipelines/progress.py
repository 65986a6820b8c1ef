"""What `pro pipeline run --local` shows: one line per stage, a progress line, the full log in a file.

KFP's local runner prints every task's executor input, its streamed output and its outputs (about 3,000
lines for the main job). :class:`StageReport` sends all of that to a log file instead (Python's
``sys.stdout`` / ``sys.stderr`` and file descriptors 1 and 2, so subprocess and C-level output too) and
shows on the terminal, per stage: a line when a training or evaluation stage starts, a line when any
stage ends (status, elapsed, its key number: reward-model accuracy, the orchestrator's MSE ratio, SFT
loss, kept samples...), and, on a terminal, a progress line for the stages running now. The registry's
bookkeeping tasks (register, promote, end of run) get a line only when they fail; the final table lists
what they registered. A failed stage prints its own last lines and the log's path.

It follows the tasks by wrapping ``kfp.local.task_dispatcher.run_single_task_implementation`` (the
function KFP 2.17's local orchestrator calls for each task, on the task's thread) for the duration of
the run; ``--verbose`` runs without it, streaming everything as before.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

# Per component (KFP task name): its key number(s) from the numbers its stage returns (the Metrics artifact);
# the first format whose fields are all there is shown.
KEY_NUMBERS: dict[str, tuple[str, ...]] = {
    "prepare-data": ("{n_train:.0f} train / {n_eval:.0f} held-out pairs",),
    "train-reward-model": ("accuracy {accuracy:.3f}",),
    "score-targets": ("targets for {n_scored:.0f} pairs",),
    "train-orchestrator": ("loss {train_loss:.4f}",),
    "evaluate-orchestrator": ("MSE ratio vs best fixed {mse_ratio_vs_best_fixed:.3f}",),
    "wic-offline-sft": ("SFT loss {sft_loss_first:.3f} -> {sft_loss_last:.3f}",),
    "wic-online-sample": ("kept {kept:.0f} of {samples:.0f} samples",),
    "wic-online-sft": ("SFT loss {sft_loss_first:.3f} -> {sft_loss_last:.3f}", "{sft_examples:.0f} SFT examples"),
    "wic-evaluate": ("hypervolume {hypervolume:.3f}",),
    "morlhf-train": ("loss {train_loss:.4f}",),
    "morlhf-evaluate": ("hypervolume {hypervolume:.3f}",),
}
# Bookkeeping tasks: a line only when they fail (the final table shows what they registered).
QUIET_TASKS = ("register-model", "promote-model", "register-endpoint", "finish-pipeline-run")
TAIL_LINES = 40


def _base(task: str) -> str:
    """``train-reward-model-2`` -> ``train-reward-model`` (KFP numbers repeated components)."""
    head, _, last = task.rpartition("-")
    return head if last.isdigit() and head else task


def key_number(task: str, outputs: Any) -> str:
    """The stage's key number from its ``Metrics`` outputs' metadata ('' when it has none)."""
    numbers: dict[str, float] = {}
    for value in (outputs or {}).values() if isinstance(outputs, dict) else ():
        meta = getattr(value, "metadata", None)
        if isinstance(meta, dict):
            numbers.update({k: v for k, v in meta.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    for fmt in KEY_NUMBERS.get(_base(task), ()):
        try:
            return fmt.format(**numbers)
        except (KeyError, ValueError):
            continue
    return ""


def _label(task: str, arguments: dict) -> str:
    for arg in ("objective", "round_index", "name"):
        if isinstance(arguments.get(arg), (str, int)) and not isinstance(arguments.get(arg), bool):
            return f"{_base(task)} [{arguments[arg]}]"
    return _base(task)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KFP_LOG = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - [A-Z]+ - ")


def _own_lines(lines) -> list[str]:
    """A task's tail without KFP's own log lines and separators, colour codes and KFP's 4-space indent."""
    out = []
    for line in lines:
        line = _ANSI.sub("", line)
        if _KFP_LOG.match(line) or not line.strip("- \n"):
            continue
        out.append(line[4:] if line.startswith("    ") else line)
    return out


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


@dataclass
class _Task:
    label: str
    start: float
    lines: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))


class _LogWriter(io.TextIOBase):
    """sys.stdout / sys.stderr during the run: everything to the log; each line also to the tail of the
    task whose thread wrote it (KFP streams a task's subprocess output on that task's thread)."""

    def __init__(self, report: "StageReport"):
        self.report = report
        self.partial: dict[int, str] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        rep = self.report
        with rep.lock:
            rep.log.write(text)
            task = rep.thread_task.get(threading.get_ident())
            if task is not None:
                buf = self.partial.get(id(task), "") + text
                *done, rest = buf.split("\n")
                task.lines.extend(line for line in done if line.strip())
                self.partial[id(task)] = rest
        return len(text)

    def flush(self) -> None:
        self.report.log.flush()

    def isatty(self) -> bool:
        return False


class StageReport:
    """Context manager around a local pipeline run; see the module docstring."""

    def __init__(self, log_path: str | Path, out: TextIO | None = None, *, spinner: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.log_path = Path(log_path)
        self.out = out
        self.spinner = spinner
        self.clock = clock
        self.lock = threading.RLock()
        self.thread_task: dict[int, _Task] = {}
        self.running: list[_Task] = []
        self.failed: list[tuple[_Task, str]] = []
        self.quiet_done = 0
        self._stop = threading.Event()
        self._progress_shown = False

    # -- terminal -----------------------------------------------------------------------------------
    def _terminal(self) -> TextIO:
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            return sys.stdout   # no descriptor (captured): write to the object itself
        return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(sys.stdout, "encoding", None) or "utf-8",
                         errors="replace")

    def say(self, line: str) -> None:
        with self.lock:
            if self._progress_shown:
                self.term.write("\r\033[K")
                self._progress_shown = False
            self.term.write(line + "\n")
            self.term.flush()
            self.log.write(f"[pro] {line}\n")

    def _progress_loop(self) -> None:
        frames = "|/-\\"
        i = 0
        while not self._stop.wait(0.5):
            with self.lock:
                if not self.running:
                    continue
                now = self.clock()
                what = ", ".join(f"{t.label} {_clock(now - t.start)}" for t in self.running)
                width = 120
                self.term.write(f"\r\033[K  {frames[i % 4]} running: {what}"[:width])
                self.term.flush()
                self._progress_shown = True
                i += 1

    # -- tasks --------------------------------------------------------------------------------------
    def _wrap(self, run_task: Callable) -> Callable:
        report = self

        def run_single_task_implementation(*args, **kwargs):
            component = kwargs.get("component_name", args[1] if len(args) > 1 else "task")
            arguments = kwargs.get("arguments", args[4] if len(args) > 4 else {}) or {}
            task_name = component[len("comp-"):] if component.startswith("comp-") else component
            task = _Task(_label(task_name, arguments), report.clock())
            quiet = _base(task_name) in QUIET_TASKS
            with report.lock:
                report.thread_task[threading.get_ident()] = task
                report.running.append(task)
            if not quiet:
                report.say(f"  > {task.label:<34} started")
            status_name, outputs, error = "FAILED", None, None
            try:
                outputs, status = run_task(*args, **kwargs)
                status_name = getattr(status, "name", str(status))
                return outputs, status
            except BaseException as exc:
                error = exc
                raise
            finally:
                took = _clock(report.clock() - task.start)
                with report.lock:
                    report.running.remove(task)
                    report.thread_task.pop(threading.get_ident(), None)
                if status_name == "SUCCESS":
                    if quiet:
                        report.quiet_done += 1
                    else:
                        number = key_number(task_name, outputs)
                        report.say(f"  = {task.label:<34} done    {took:>6}" + (f"   {number}" if number else ""))
                else:
                    report.failed.append((task, str(error or status_name)))
                    report.say(f"  ! {task.label:<34} FAILED  {took:>6}")

        return run_single_task_implementation

    def __enter__(self) -> "StageReport":
        from kfp.local import task_dispatcher

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w", buffering=1, encoding="utf-8", errors="replace")
        self.term = self.out or self._terminal()
        self._own_term = self.out is None and self.term is not sys.stdout
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved_streams = (sys.stdout, sys.stderr)
        self._saved_fds = []
        for fd in (1, 2):   # subprocesses and C code that write to the descriptors
            try:
                self._saved_fds.append((fd, os.dup(fd)))
                os.dup2(self.log.fileno(), fd)
            except OSError:
                pass
        writer = _LogWriter(self)
        sys.stdout = sys.stderr = writer
        self._original = task_dispatcher.run_single_task_implementation
        task_dispatcher.run_single_task_implementation = self._wrap(self._original)
        show = self.spinner if self.spinner is not None else bool(getattr(self.term, "isatty", lambda: False)())
        self._thread = threading.Thread(target=self._progress_loop, daemon=True) if show else None
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        from kfp.local import task_dispatcher

        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        task_dispatcher.run_single_task_implementation = self._original
        if exc is not None:   # the traceback belongs in the log (the terminal gets the stage's lines)
            import traceback

            self.log.write("".join(traceback.format_exception(exc_type, exc, tb)))
        sys.stdout, sys.stderr = self._saved_streams
        self.log.flush()
        for fd, saved in self._saved_fds:
            with contextlib.suppress(OSError):
                os.dup2(saved, fd)
                os.close(saved)
        with self.lock:
            if self._progress_shown:
                self.term.write("\r\033[K")
        if self.quiet_done:
            self.say(f"  = registry and bookkeeping: {self.quiet_done} task(s) done")
        for task, _why in self.failed:
            self.say(f"\nstage {task.label} failed; its last lines:")
            for line in _own_lines(task.lines)[-20:]:
                self.say(f"  | {line[:200]}")
        if exc is not None and not self.failed:
            self.say(f"\nthe pipeline failed: {exc_type.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        if exc is not None:
            self.say(f"full log: {self.log_path}")
        self.log.close()
        if self._own_term:
            with contextlib.suppress(OSError):
                self.term.close()
