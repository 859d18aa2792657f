"""What every command shares: error handling, consoles, progress rendering, common options.

Nothing here imports torch, so ``dfx --help`` starts fast.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dfx import distributed

EXIT_INPUT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool that SIGPIPE ended


class Settings:
    """Global flags set by the root callback."""

    debug: bool = bool(os.environ.get("DFX_DEBUG"))
    quiet: bool = False


DATA_PARALLEL_COMMANDS = frozenset(
    {"train-base", "train-fusion", "train-baseline", "evaluate", "jpeg-robustness", "robustness"}
)
"""Commands that run data-parallel under torchrun; the others refuse to be launched so."""


def stdout() -> Console:
    """Console for results (tables) on standard output; silent on ranks other than 0."""
    return Console(highlight=False, quiet=not distributed.is_main())


def stderr() -> Console:
    """Console for progress, notices and warnings on standard error; silent off rank 0."""
    return Console(stderr=True, highlight=False, quiet=not distributed.is_main())


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one sentence to stderr and return the Exit to raise.

    Under torchrun every process prints its own errors, naming its rank, as they may
    differ; an interruption, which reaches every process at once, is told by rank 0 only.
    """
    if code == EXIT_INTERRUPTED and not distributed.is_main():
        return typer.Exit(code)
    where = f"rank {distributed.launched_rank()}: " if distributed.is_launched() else ""
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(
        f"[bold red]error:[/bold red] {escape(where + message)}", markup=True, soft_wrap=True
    )
    return typer.Exit(code)


def check_launch(command: str | None) -> None:
    """Under torchrun: refuse commands that do not run data-parallel; quiet all but rank 0."""
    from dfx.errors import DfxError

    try:
        distributed.check_launcher_variables()
    except DfxError as error:
        raise fail(str(error)) from None
    if not distributed.is_launched():
        return
    if command in DATA_PARALLEL_COMMANDS:
        distributed.activate(leave_at_exit=False)  # handle_errors leaves the group
    elif command is not None:
        if distributed.launched_rank() != 0:  # every process would say the same
            raise typer.Exit(EXIT_USAGE)
        raise fail(
            f"'dfx {command}' does not run data-parallel; run it without torchrun "
            f"(torchrun runs: {', '.join(sorted(DATA_PARALLEL_COMMANDS))})."
        )
    if not distributed.is_main():
        Settings.quiet = True


def handle_errors(command):
    """Turn user errors into one sentence and exit 2; tracebacks only with --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from dfx.errors import DfxError, TrainingInterrupted

        try:
            result = command(*args, **kwargs)
        except typer.Exit as done:
            if done.exit_code in (0, EXIT_INPUT_FAILED):  # every process ends so together
                distributed.finish()
            raise
        except typer.Abort:
            raise
        except TrainingInterrupted as interrupt:
            message = interrupted_message(interrupt, kwargs.get("ctx"))
            raise fail(message, EXIT_INTERRUPTED) from None
        except DfxError as error:
            if Settings.debug:
                traceback.print_exc()
            raise fail(str(error)) from None
        except KeyboardInterrupt:
            raise fail("interrupted.", EXIT_INTERRUPTED) from None
        except BrokenPipeError:  # the reader of stdout went away (dfx predict ... | head)
            # Python's own flush at exit would fail again and print a traceback.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except OSError as error:  # the file system said no: a full disk, a read-only folder
            if Settings.debug:
                traceback.print_exc()
            reason = error.strerror or str(error)
            if error.filename:
                raise fail(f"cannot use {error.filename}: {reason}.") from None
            raise fail(f"{reason}.") from None
        except Exception as error:  # a bug: say so in one line, traceback with --debug
            if Settings.debug:
                traceback.print_exc()
            if type(error).__name__ == "OutOfMemoryError":  # torch's, CUDA or other devices
                raise fail(
                    "the device ran out of memory; use a smaller --batch-size "
                    "(or --precision bf16/fp16 on a GPU)."
                ) from None
            raise fail(
                f"internal error {type(error).__name__}: {error} (run with --debug for details).",
                EXIT_INTERNAL,
            ) from None
        distributed.finish()
        return result

    return wrapper


def interrupted_message(interrupt, context: typer.Context | None = None) -> str:
    """What Ctrl-C during training saved, and the exact command that resumes."""
    if interrupt.state_path is None:
        return (
            f"interrupted during the first epoch of {interrupt.label}; "
            "no epoch was completed, so there is nothing to resume."
        )
    if interrupt.epoch == 0:  # between models, or early in one that follows finished ones
        saved = f"the finished work is saved in {interrupt.state_path}"
    else:
        saved = f"the state after epoch {interrupt.epoch} is saved in {interrupt.state_path}"
    return (
        f"interrupted; {interrupt.label}: {saved}; "
        f"resume with: {current_command(context, '--resume')}"
    )


def current_command(context: typer.Context | None, *extra: str) -> str:
    """The running command line as the user could type it again, plus ``extra`` options.

    Rebuilt from the parsed parameters (what differs from the defaults) when the command
    receives its context, else taken from ``sys.argv``.
    """
    # Under torchrun the user re-runs the same launch line; show what follows its "-m".
    program = "torchrun [same options] -m dfx" if distributed.is_active() else "dfx"
    if context is None:
        words = [w for w in sys.argv[1:] if w not in extra]
        return " ".join([program, shlex.join([*words, *extra])])
    parts = [context.info_name or ""]
    for parameter in context.command.params:
        value = context.params.get(parameter.name)
        if parameter.param_type_name == "argument":
            parts += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif value is not None and value != parameter.default and parameter.opts[0] not in extra:
            parts += _option_words(parameter, value)
    return " ".join([program, shlex.join([*parts, *extra])])


def _option_words(option, value) -> list[str]:
    if option.is_flag:
        if value:
            return [option.opts[0]]
        return [option.secondary_opts[0]] if option.secondary_opts else []
    values = value if isinstance(value, (list, tuple)) else [value]
    return [option.opts[0], *(str(v) for v in values)]


class RichProgress:
    """A :class:`dfx.progress.ProgressReporter` that draws rich progress bars on stderr."""

    _kept = ("epochs",)

    def __init__(self, enabled: bool = True) -> None:
        self.console = stderr()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=not enabled or Settings.quiet,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start(self, task: str, total: int | None, description: str) -> None:
        self.finish(task)
        self.tasks[task] = self.progress.add_task(description, total=total, info="")

    def advance(self, task: str, steps: int = 1, **fields: object) -> None:
        if task in self.tasks:
            info = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
            self.progress.update(self.tasks[task], advance=steps, info=info)

    def finish(self, task: str) -> None:
        task_id = self.tasks.pop(task, None)
        if task_id is not None and task not in self._kept:
            self.progress.remove_task(task_id)

    def notice(self, message: str) -> None:
        if not Settings.quiet:
            self.progress.console.print(message, markup=False, highlight=False)


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def report_failures(failures, what: str = "image") -> None:
    """Name the first few unreadable inputs on stderr, with their count."""
    report_list(
        f"skipped {len(failures)} unreadable {what}(s):",
        [f"{f.source}: {f.reason}" for f in failures],
    )


def report_skipped(reasons: dict[str, str]) -> None:
    """Name the first few files passed over because they are not images, and why."""
    lines = [f"{name}: {reason}" for name, reason in reasons.items()]
    report_list(f"skipped {len(lines)} non-image file(s):", lines)


def report_manifest_checks(manifest) -> None:
    """Say which rows --allow-changed left out, and when a manifest cannot be checked."""
    report_list(
        f"left out {len(manifest.dropped)} manifest file(s) that changed or vanished:",
        [f"{name}: {reason}" for name, reason in manifest.dropped],
    )
    if not manifest.fingerprinted and not Settings.quiet:
        stderr().print(
            "[yellow]notice:[/yellow] this manifest has no size/hash columns (an older dfx "
            "wrote it), so changed files go unnoticed; re-run 'dfx split' to add them."
        )


def check_outputs(files: list[str | Path | None], folder: Path | None = None) -> None:
    """Fail before any work when an output file (or the plots ``folder``) cannot be written.

    ``-`` (stdout, for one file at most) and None are skipped. A file must not be a folder,
    the folder not a file, and the nearest existing folder above each must be writable.
    """
    from dfx.errors import DfxError

    if sum(str(f) == "-" for f in files if f is not None) > 1:
        raise DfxError("--json - and --csv - cannot both write to stdout.")
    wanted = [(Path(f), "file") for f in files if f is not None and str(f) != "-"]
    if folder is not None:
        wanted.append((folder, "folder"))
    for path, kind in wanted:
        if kind == "file" and path.is_dir():
            raise DfxError(f"cannot write {path}: it is a folder, and a file is needed.")
        if kind == "folder" and path.exists() and not path.is_dir():
            raise DfxError(f"cannot write into {path}: it is a file, and a folder is needed.")
        existing = path if kind == "folder" and path.is_dir() else path.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            raise DfxError(f"cannot write {path}: the folder {existing} is not writable.")


def write_outputs(document: dict, rows: list[dict], json_path, csv_path) -> tuple[list, bool]:
    """Write the JSON document and CSV rows to files or stdout.

    Returns the files written and whether stdout was used (then no table may follow).
    """
    from dfx.report import to_csv, to_json, write_json, write_text

    written = []
    if json_path not in (None, "-"):
        written.append(write_json(document, json_path))
    if csv_path not in (None, "-"):
        written.append(write_text(to_csv(rows), csv_path))
    if json_path == "-":
        print_json(to_json(document))
        return written, True
    if csv_path == "-":
        print_json(to_csv(rows).rstrip("\n"))
        return written, True
    return written, False


def report_list(title: str, lines: list[str], shown: int = 5) -> None:
    """Name the first few items of a list of problems on stderr, under a title with the count."""
    if not lines:
        return
    console = stderr()
    console.print(f"[yellow]{title}[/yellow]")
    for line in lines[:shown]:
        console.print(f"  {line}", markup=False)
    if len(lines) > shown:
        console.print(f"  ... and {len(lines) - shown} more", markup=False)


def failure_records(failures) -> list[dict]:
    """Unreadable inputs as JSON records, each file once."""
    unique = {f.source: f for f in failures}
    return [f.to_dict() for f in unique.values()]


def exit_if_failures(failures) -> None:
    """Exit 1 when the run finished but some inputs could not be read."""
    if failures:
        raise typer.Exit(EXIT_INPUT_FAILED)


def print_json(text: str) -> None:
    """Write JSON to stdout exactly, with no rich formatting (rank 0 only)."""
    if not distributed.is_main():
        return
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


Device = Annotated[str, typer.Option("--device", help="Where to run: auto, cpu, cuda or cuda:N.")]
Precision = Annotated[
    str,
    typer.Option(
        "--precision", help="Autocast: auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16."
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers", min=0, help="DataLoader worker processes (default: CPUs - 1, at most 16)."
    ),
]
InferenceBatchSize = Annotated[
    int | None,
    typer.Option("--batch-size", min=1, help="Images per step (default: 32 on CPU, 256 on CUDA)."),
]
TrainBatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size",
        min=1,
        help="Samples per optimisation step; under torchrun, the global batch of all processes.",
    ),
]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile", help="Compile the network with torch.compile (slow start, faster steps)."
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed for sampling, initialisation, shuffling.")]
ManifestOption = Annotated[
    Path,
    typer.Option("--manifest", "-m", help="Manifest CSV written by 'dfx split'."),
]
Epochs = Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")]
LearningRate = Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate.")]
WeightDecay = Annotated[float, typer.Option("--weight-decay", min=0.0, help="Adam weight decay.")]
LrStep = Annotated[
    int, typer.Option("--lr-step", min=0, help="StepLR period in epochs (0: constant rate).")
]
ValFraction = Annotated[
    float, typer.Option("--val-fraction", min=0.0, max=0.9, help="Share held out for validation.")
]
MaxPixels = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Skip images with more pixels (width × height) as possible decompression bombs.",
    ),
]
Resume = Annotated[
    bool,
    typer.Option("--resume", help="Continue from the state saved after the last completed epoch."),
]
AllowChanged = Annotated[
    bool,
    typer.Option(
        "--allow-changed",
        help="Skip manifest files that changed or vanished since 'dfx split' instead of stopping.",
    ),
]
