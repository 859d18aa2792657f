"""Every fenced ``bash`` example of README.md and docs/*.md runs against a tiny demo model.

A documented command that no longer parses (a renamed option, a removed flag) or that
fails fails this test, which names the example's file:line and its stderr. Examples that
need what a test cannot have carry a marker in the fence's info string (```` ```bash
needs-gpu ````; the list is ``MARKERS`` and docs/testing.md) and are skipped; fences with
no ``dfx`` command in them (pip, grep, benchmarks) are not examples of dfx and are skipped
too.

Each document runs in a copy of one tiny demo workspace: ``dfx demo``'s layout (data/,
manifest.csv, base/, model.pt), which is the README's own, plus the files the examples
name (photo.jpg, inbox/, sets/progan, baseline.pt, ...). Its fences run in order, sharing
files and ``export``-ed variables as a reader's shell would. A ``dfx`` command runs in
this process through Typer's CliRunner (a subprocess costs seconds of start-up): a plain
line, and the ``dfx`` stages of a simple pipeline (``find ... | dfx ... > FILE``, ``dfx ...
| jq ...``, ``dfx ... || echo ...``), whose other stages run as child processes, as
``bash -o pipefail`` would run them. Anything else (``$VARIABLES``, globs, ``&&``, loops,
``torchrun``) runs in ``bash -o pipefail`` with the installed ``dfx`` first on PATH.
``pytest -s`` shows each command's time.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import typer.main
from PIL import Image
from typer.testing import CliRunner

from dfx.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

MARKERS = {
    "needs-network": "downloads something (pip install, hf://, https://, ImageNet weights)",
    "needs-gpu": "runs on CUDA or on several GPUs",
    "needs-data": "reads the user's own data sets or the paper's (~/sets/..., guidance.csv)",
    "needs-paper-model": "trains a full-size backbone or reads the authors' released weights",
    "needs-server": "runs dfx serve or talks to a running one",
    "needs-torchrun": "launches several processes with torchrun",
    "needs-openvino": "uses the OpenVINO runtime, which the test extra leaves out",
    "slow": "runs here, but for minutes (dfx demo in full; CI runs it on a core install)",
}
"""Info-string markers of fences the test skips, and what each one means."""

SETUP_MARKERS = {
    "no-manifest": "starts from labelled data with no manifest yet: run after removing "
    "manifest.csv (dfx split refuses to overwrite one)",
}
"""Info-string markers of fences the test runs, after the setup each one names."""

BIN = Path(sys.executable).parent
"""The environment's scripts: the installed ``dfx`` that shell lines run."""

COMPOUND = re.compile(r"^\s*(for|while|until|if|case|function)\b|^\s*\w+\s*\(\)", re.MULTILINE)
"""Shell constructs spanning lines: such a fence runs as one script."""

EXPORT = re.compile(r"^export\s+(\w+)=(\S+)$")
SHELL_CHARACTERS = set("$`*?~")
"""Characters that need a shell in an otherwise plain line (variables, globs, ``~``)."""

runner = CliRunner()


def shown(document: Path) -> str:
    """A document's path as failures name it: relative to the repository where it can be."""
    return str(document.relative_to(ROOT) if document.is_relative_to(ROOT) else document)


@dataclass(frozen=True)
class Command:
    """One command line of an example: where it is written and its text."""

    document: Path
    """The Markdown file."""
    line: int
    """1-based line of the command's first line in the file."""
    text: str
    """The command, continuation lines joined, comments left to the shell."""

    @property
    def where(self) -> str:
        """``file:line``, relative to the repository where the file is in it."""
        return f"{shown(self.document)}:{self.line}"


@dataclass(frozen=True)
class Fence:
    """A fenced ``bash`` block of a document."""

    document: Path
    """The Markdown file."""
    line: int
    """1-based line of the block's first line of code."""
    markers: tuple[str, ...]
    """The words of the info string after ``bash``."""
    code: list[str]
    """The lines of code, the fence's indentation removed."""

    def commands(self) -> list[Command]:
        """What runs: each line, or the whole script where it has a loop, condition or function."""
        text = "\n".join(self.code)
        if COMPOUND.search(text):
            return [Command(self.document, self.line, text)]
        return self.lines()

    def lines(self) -> list[Command]:
        """The block's lines: continuation lines joined; blank and comment lines left out."""
        commands, pending, start = [], [], 0
        for number, line in enumerate(self.code, self.line):
            if not pending:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                start = number
            if line.endswith("\\"):
                pending.append(line[:-1])
                continue
            commands.append(Command(self.document, start, " ".join([*pending, line]).strip()))
            pending = []
        return commands

    def uses_dfx(self) -> bool:
        """Whether the block runs dfx: ``dfx`` as a word of code (not in a comment or quotes)."""
        return any("dfx" in words(c.text) for c in self.commands())


def fences(document: Path) -> list[Fence]:
    """The ``bash`` blocks of a Markdown file, in order."""
    lines = document.read_text(encoding="utf-8").splitlines()
    found, index = [], 0
    while index < len(lines):
        opening = re.match(r"^(\s*)```bash(.*)$", lines[index])
        index += 1
        if not opening:
            continue
        indent, markers = len(opening.group(1)), tuple(opening.group(2).split())
        start = index
        while not lines[index].strip().startswith("```"):
            index += 1
        code = [line[indent:] if line[:indent].isspace() else line for line in lines[start:index]]
        found.append(Fence(document, start + 1, markers, code))
        index += 1
    return found


PUNCTUATION = set("();<>|&")
"""Characters of the shell's control and redirection operators."""


def words(text: str) -> list[str]:
    """The words of a command as a shell splits them, comments left out; operators are words.

    Unbalanced quotes give no words.
    """
    lexer = shlex.shlex(text, posix=True, punctuation_chars="".join(sorted(PUNCTUATION)))
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:
        return []


def shell_syntax(text: str) -> bool:
    """Whether a command needs bash: anything but ``dfx`` and plain words (quotes allowed)."""
    split = words(text)
    return (
        not split
        or split[0] != "dfx"
        or any(set(word) <= PUNCTUATION for word in split)
        or bool(SHELL_CHARACTERS & set(text))
    )


def allowed_exit_codes(command: Command) -> set[int]:
    """0; 1 too for a ``--min-accuracy`` gate (its failing outcome); 141 too for ``| head``.

    A reader that stops early (``head``) ends dfx with 141 (128 + SIGPIPE), which
    ``pipefail`` reports and an interactive shell does not.
    """
    codes = {0}
    if "--min-accuracy" in command.text:
        codes.add(1)
    if re.search(r"\|\s*head\b[^|]*$", command.text):
        codes.add(141)
    return codes


# --- the workspace ------------------------------------------------------------------------


def save_copies(sources: list[Path], folder: Path, suffixes: list[str]) -> None:
    """Re-encode demo images into ``folder``, cycling through the suffixes' formats."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, source in enumerate(sources):
        suffix = suffixes[index % len(suffixes)]
        with Image.open(source) as image:
            image.convert("RGB").save(folder / f"{source.stem}{suffix}")


@pytest.fixture(scope="session")
def demo_workspace(demo_run, tmp_path_factory) -> Path:
    """The session's tiny ``dfx demo`` plus every file the examples name; examples copy it."""
    demo, result = demo_run
    assert result.exit_code == 0, result.output
    root = shutil.copytree(demo, tmp_path_factory.mktemp("doc-examples") / "workspace")
    result = runner.invoke(app, ["train-baseline", "-m", str(root / "manifest.csv"),
                                 "--backbone", "tiny", "--weights", "none", "--image-size",
                                 "32", "--epochs", "1", "--device", "cpu", "--workers", "0",
                                 "-o", str(root / "baseline.pt")])  # fmt: skip
    assert result.exit_code == 0, result.output

    images = {c: sorted((root / "data" / c).rglob("*.png")) for c in ("dm", "gan", "real")}
    mixed = [images[c][i] for i in range(2) for c in images]  # two of each class
    with Image.open(images["real"][0]) as image:
        image.convert("RGB").save(root / "photo.jpg", quality=90)
    with Image.open(images["gan"][0]) as image:
        image.convert("RGB").save(root / "suspicious.webp")
    for name in ("other.png", "notes.png", "a.png"):
        shutil.copy(images["dm"][0], root / name)
    shutil.copy(root / "photo.jpg", root / "b.jpg")
    for folder in ("downloads", "inbox", "photos", "screenshots", "suspects"):
        save_copies(mixed, root / folder, [".png", ".jpg"])
    # 'find inbox -newer last-run': the inbox is newer than the last run.
    (root / "last-run").touch()
    os.utime(root / "last-run", (0, 0))
    # Folder data sets of the CNNDetection layout (docs/data-layout.md).
    for name in ("progan", "ldm", "stylegan2"):
        save_copies(images["real"][:4], root / "sets" / name / "0_real", [".png"])
        save_copies(images["gan"][:2] + images["dm"][:2], root / "sets" / name / "1_fake",
                    [".png"])  # fmt: skip
    (root / "dfx-demo").symlink_to(".")  # docs/demo.md's paths: dfx-demo/model.pt
    return root


# --- running ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What running one command gave."""

    exit_code: int
    """Its exit status."""
    stderr: str
    """What it wrote on stderr (and a traceback where it raised)."""


def run_in_process(command: Command, env: dict[str, str]) -> Outcome:
    """A plain ``dfx ...`` line through CliRunner, in the current directory."""
    result = runner.invoke(app, shlex.split(command.text, comments=True)[1:], env=env)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return Outcome(result.exit_code, stderr)


def child_environment(env: dict[str, str]) -> dict[str, str]:
    """The environment of a child process: the exported variables; the installed ``dfx``
    first on PATH, and never src/ on PYTHONPATH."""
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    child = {**os.environ, **env, "PATH": path}
    child.pop("PYTHONPATH", None)
    return child


def pipeline(text: str) -> list[list[list[str]]] | None:
    """A line's ``||`` alternatives, each a list of ``|`` stages, the last one optionally
    ending in ``> FILE``; None where the line needs a real shell (``$``, globs, ``&&``, ...)."""
    if "$" in text or "`" in text or "\n" in text:
        return None
    raw = shlex.shlex(text, posix=False, punctuation_chars="".join(sorted(PUNCTUATION)))
    raw.whitespace_split, raw.commenters = True, "#"
    try:
        unquoted = [w for w in raw if w[:1] not in "'\""]
    except ValueError:
        return None
    if any(set(w) & set("*?~[") for w in unquoted):
        return None
    alternatives: list[list[list[str]]] = [[[]]]
    for word in words(text):
        if word == "||":
            alternatives.append([[]])
        elif word == "|":
            alternatives[-1].append([])
        elif word == ">" or set(word) > PUNCTUATION or not set(word) <= PUNCTUATION:
            alternatives[-1][-1].append(word)
        else:  # &&, ;, <, & ...
            return None
    stages = [stage for alternative in alternatives for stage in alternative]
    if not all(stages) or any(">" in stage[:-2] or "=" in stage[0] for stage in stages):
        return None
    return alternatives


def run_pipeline(alternatives: list[list[list[str]]], env: dict[str, str], cwd: Path) -> Outcome:
    """A simple pipeline as bash would run it under pipefail, its ``dfx`` stages in this
    process (CliRunner, stdin from the stage before) and other stages as child processes."""
    shell_env = child_environment(env)
    for alternative in alternatives:
        text, code, stderr = "", 0, ""
        for stage in alternative:
            target = None
            if len(stage) > 2 and stage[-2] == ">":
                stage, target = stage[:-2], cwd / stage[-1]
            if stage[0] == "dfx":
                result = runner.invoke(app, stage[1:], input=text, env=env)
                stage_code, text, stage_stderr = result.exit_code, result.stdout, result.stderr
            else:
                done = subprocess.run(stage, input=text, cwd=cwd, env=shell_env,
                                      capture_output=True, text=True, timeout=300)  # fmt: skip
                stage_code, text, stage_stderr = done.returncode, done.stdout, done.stderr
            code, stderr = stage_code or code, stderr + stage_stderr
            if target is not None:
                target.write_text(text, encoding="utf-8")
                text = ""
        if code == 0:
            break
    return Outcome(code, stderr)


def run_in_bash(command: Command, env: dict[str, str], cwd: Path) -> Outcome:
    """A line (or script) with shell syntax through ``bash -o pipefail``."""
    shell_env = child_environment(env)
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command.text], cwd=cwd,
                          env=shell_env, capture_output=True, text=True, timeout=300)  # fmt: skip
    return Outcome(done.returncode, done.stderr)


def expand(value: str, env: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from ``env``, then from the environment."""

    def lookup(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, os.environ.get(name, ""))

    return re.sub(r"\$(\w+)|\$\{(\w+)\}", lookup, value)


def dfx_arguments(text: str) -> list[list[str]]:
    """The arguments of each ``dfx`` a command line runs (``dfx ...``, ``| dfx ...``,
    ``-m dfx ...``), up to the next operator; none from words the shell would expand."""
    found: list[list[str]] = []
    current: list[str] | None = None
    for word in words(re.sub(r"<[\w-]+>", "PLACEHOLDER", text)):  # --sha256 <hash>
        if set(word) <= PUNCTUATION:
            current = None
        elif current is not None:
            current.append(word)
        elif word == "dfx":
            current = []
            found.append(current)
    # A bare 'dfx' is a name (systemctl enable dfx), not a command line.
    return [args for args in found if args and not any("$" in a for a in args)]


def parse_error(arguments: list[str]) -> str | None:
    """Why the command line would not parse dfx's ``arguments``, without running anything."""
    group = typer.main.get_command(app)
    try:
        with group.make_context("dfx", arguments[:1]) as context:
            command = group.get_command(context, arguments[0]) if arguments else None
            if command is None:
                return f"no such command: {arguments[:1]}"
            command.make_context(arguments[0], arguments[1:], parent=context)
    except Exception as error:  # a UsageError of Typer's click, or a callback's error
        return f"{type(error).__name__}: {error}"
    return None


def check_parses(fence: Fence, env: dict[str, str]) -> list[str]:
    """A marked block's dfx lines still parse (option names, values, arity): failures.

    ``env``: the variables exported so far; the block's exports are added to it (they need
    nothing, and a reader who follows the document runs them).
    """
    failures = []
    for line in fence.lines():
        exported = EXPORT.match(line.text.split("#")[0].strip())
        if exported:
            env[exported.group(1)] = expand(exported.group(2), env)
        for arguments in dfx_arguments(line.text):
            with pytest.MonkeyPatch.context() as patch:
                for name, value in env.items():
                    patch.setenv(name, value)
                error = parse_error(arguments)
            if error:
                failures.append(f"{line.where}: does not parse: {error}\n  $ {line.text}")
    return failures


def run_document(document: Path, workspace: Path) -> tuple[int, list[str]]:
    """Run a document's runnable examples in ``workspace``: (commands run, failures)."""
    env: dict[str, str] = {"PWD": str(workspace)}
    ran, failures = 0, []
    for fence in fences(document):
        if set(fence.markers) - set(SETUP_MARKERS):
            failures += check_parses(fence, env)
            continue
        if "no-manifest" in fence.markers:
            (workspace / "manifest.csv").unlink(missing_ok=True)
        if not fence.uses_dfx():
            continue
        for command in fence.commands():
            exported = EXPORT.match(command.text.split("#")[0].strip())
            if exported:
                env[exported.group(1)] = expand(exported.group(2), env)
                continue
            started = time.perf_counter()
            if not shell_syntax(command.text):
                outcome = run_in_process(command, env)
            elif simple := pipeline(command.text):
                outcome = run_pipeline(simple, env, workspace)
            else:
                outcome = run_in_bash(command, env, workspace)
            print(f"{time.perf_counter() - started:6.1f} s  {command.where}  {command.text[:70]}")
            ran += 1
            if outcome.exit_code not in allowed_exit_codes(command):
                failures.append(
                    f"{command.where}: exit code {outcome.exit_code}\n  $ {command.text}\n"
                    + "\n".join(f"  | {line}" for line in outcome.stderr.strip().splitlines()[-15:])
                )
    return ran, failures


def runnable(document: Path) -> bool:
    """Whether a document has an example the test runs."""
    return any(not set(f.markers) - set(SETUP_MARKERS) and f.uses_dfx() for f in fences(document))


def test_markers_are_known():
    unknown = [
        f"{shown(fence.document)}:{fence.line - 1}: {marker}"
        for document in DOCUMENTS
        for fence in fences(document)
        for marker in fence.markers
        if marker not in MARKERS and marker not in SETUP_MARKERS
    ]
    known = ", ".join([*MARKERS, *SETUP_MARKERS])
    assert not unknown, f"unknown markers (known: {known}): {unknown}"


def test_a_broken_example_is_reported_with_its_line(tmp_path, monkeypatch):
    document = tmp_path / "broken.md"
    document.write_text(
        "```bash\ndfx evaluate --model model.pt --no-such-option\n```\n\n"
        "```bash\ndfx backbones --no-such-option | head -1\n```\n\n"  # pipefail
        "```bash\ndfx backbones --no-such-option || echo handled\n```\n\n"
        "```bash needs-gpu\ndfx predict --model m.pt --devise cuda x.png\n```\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    ran, failures = run_document(document, tmp_path)
    assert ran == 3 and len(failures) == 3, failures
    assert failures[0].startswith(f"{document}:2: exit code 2\n")
    assert "no-such-option" in failures[0].split("\n", 2)[2]  # the command's stderr
    assert failures[1].startswith(f"{document}:6: exit code 2\n")
    assert failures[2].startswith(f"{document}:14: does not parse: NoSuchOption")


def test_every_marker_is_documented():
    testing = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    assert [m for m in [*MARKERS, *SETUP_MARKERS] if f"`{m}`" not in testing] == []


@pytest.mark.parametrize(
    "document",
    [d for d in DOCUMENTS if any(f.uses_dfx() for f in fences(d))],
    ids=lambda d: d.relative_to(ROOT).as_posix(),
)
def test_documented_examples_run(document, request, tmp_path, monkeypatch):
    workspace = tmp_path / "workspace"
    if runnable(document):  # else only marked examples, which are parsed
        if shutil.which("dfx", path=str(BIN)) is None:
            pytest.fail(f"no dfx script in {BIN}: install the package (pip install -e .)")
        code = [
            c.text
            for f in fences(document)
            if not set(f.markers) - set(SETUP_MARKERS)
            for c in f.commands()
        ]
        if shutil.which("jq") is None and any(re.search(r"\|\s*jq\b", c) for c in code):
            pytest.skip("jq is not installed (apt-get install jq)")
        shutil.copytree(request.getfixturevalue("demo_workspace"), workspace, symlinks=True)
    else:
        workspace.mkdir()
    monkeypatch.chdir(workspace)
    ran, failures = run_document(document, workspace)
    assert ran > 0 or not runnable(document)
    assert not failures, f"{len(failures)} documented commands failed ({ran} ran):\n\n" + (
        "\n\n".join(failures)
    )
