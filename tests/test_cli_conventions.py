"""One command line: shared options mean the same everywhere; streams, pipes, errors as documented.

Each test checks one promise of docs/usage.md#conventions across the commands it concerns.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import typer

import dfx
from dfx.cli import app
from tests import awkward
from tests.helpers import DFX, SKIP_AS_ROOT, TINY_RUN, assert_user_error, invoke


def run_dfx(*args, env: dict | None = None, stdout=subprocess.PIPE, timeout: int = 300):
    """The installed ``dfx ARGS`` in a child process; reports whether torch was imported."""
    probe = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: sys.stderr.write(f\"\\nTORCH={'torch' in sys.modules}\\n\"))\n"
        f"sys.argv = ['dfx', *{[str(a) for a in args]!r}]\n"
        "runpy.run_module('dfx', run_name='__main__')\n"
    )
    inherited = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    environment = inherited | {"COLUMNS": "100"} | (env or {})
    return subprocess.run(
        [sys.executable, "-c", probe],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        timeout=timeout,
    )


def stderr_of(done) -> tuple[str, bool]:
    """The stderr of :func:`run_dfx` without its probe line, and whether torch was loaded."""
    text, _, probe = done.stderr.rpartition("\nTORCH=")
    return text.strip(), probe.strip() == "True"


def click_command(name: str):
    return typer.main.get_command(app).get_command(None, name)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, data_dir) -> Path:
    """A labelled folder (4 dm, 4 gan, 8 real), an empty, a truncated and a misnamed image."""
    root = tmp_path_factory.mktemp("broken") / "data"
    for label, generator, count in (("dm", "toydm-a", 4), ("gan", "toygan-a", 4),
                                    ("real", "photo", 8)):  # fmt: skip
        target = root / label / generator
        target.mkdir(parents=True)
        for path in sorted((data_dir / label / generator).iterdir())[:count]:
            shutil.copy(path, target / path.name)
    good = next((root / "real" / "photo").iterdir())
    (root / "real" / "photo" / "empty.png").write_bytes(b"")
    (root / "real" / "photo" / "truncated.png").write_bytes(good.read_bytes()[:120])
    (root / "real" / "photo" / "misnamed.png").write_text("a text file named like an image")
    (root / "real" / "photo" / "README.txt").write_text("passed over: not an image")
    return root


@pytest.fixture(scope="module")
def api_reasons(trained, folder) -> dict[str, str]:
    """What the Python API says of the broken files (and of a missing one)."""
    import dfx

    detector = dfx.load_detector(trained["model"], device="cpu")
    broken = [folder / "real" / "photo" / name for name in BROKEN]
    predictions = detector.predict([*broken, folder / "missing.png"], workers=0)
    return {Path(p.path).name: p.to_dict() for p in predictions}


BROKEN = ("empty.png", "truncated.png", "misnamed.png")
"""The unreadable image files of :func:`folder`."""


# Streams: results on stdout, everything else on stderr, nothing at all into a closed pipe.


def command_lines(trained, data_dir, tmp_path) -> dict[str, list]:
    """A working invocation of every command that prints results."""
    model, manifest = trained["model"], trained["manifest"]
    base = trained["base"]["dm"].path.parent
    image = next((data_dir / "gan" / "toygan-a").iterdir())
    cpu = ["--device", "cpu", "--workers", "0"]
    return {
        "backbones": ["backbones"],
        "split": ["split", data_dir, "--out", tmp_path / "m.csv"],
        "train-base": ["train-base", "-m", manifest, "-t", "gan", *TINY_RUN, "-o", tmp_path / "b"],
        "train-fusion": ["train-fusion", "-m", manifest, "--base-dir", base, "--epochs", "1",
                         "-o", tmp_path / "f.pt", *cpu],
        "train-baseline": ["train-baseline", "-m", manifest, *TINY_RUN, "-o", tmp_path / "l.pt"],
        "evaluate": ["evaluate", "-M", model, "-m", manifest, *cpu],
        "jpeg-robustness": ["jpeg-robustness", "-M", model, "-m", manifest, "--qf", "50", *cpu],
        "robustness": ["robustness", "-M", model, "-m", manifest, "-p", "mirror", *cpu],
        "predict": ["predict", "-M", model, image, *cpu],
        "predict --json": ["predict", "-M", model, image, "--json", *cpu],
        "demo": ["demo", "--out", tmp_path / "demo", "--per-generator", "10"],
    }  # fmt: skip


def test_every_command_under_a_closed_pipe_exits_141_silently(trained, data_dir, tmp_path):
    """``dfx COMMAND | head`` after head has gone: exit 141, nothing on stderr, no work.

    The reader is gone before dfx writes anything, so the outcome does not depend on the
    size of the output (a pipe buffers 64 KiB).
    """
    for name, args in command_lines(trained, data_dir, tmp_path).items():
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = run_dfx(*args, stdout=write_end)
        finally:
            os.close(write_end)
        errors, torch_loaded = stderr_of(done)
        assert done.returncode == 141, (name, errors)
        assert errors == "", name
        assert not torch_loaded, name  # it stopped before any work
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "demo").exists()


def test_a_reader_leaving_mid_run_ends_any_command_with_141(trained, monkeypatch):
    """A write into a pipe that closes during the run: exit 141, not rich's exit 1."""
    from dfx.cli import outputs

    def closed(text):
        raise BrokenPipeError

    monkeypatch.setattr(outputs, "print_json", closed)
    result = invoke("evaluate", "-M", trained["model"], "-m", trained["manifest"], "--json",
                    "--workers", "0")  # fmt: skip
    assert result.exit_code == 141 and "error" not in result.stderr


def test_rich_output_into_a_closed_pipe_raises_instead_of_exiting_1():
    from dfx.cli.console import DfxConsole

    read_end, write_end = os.pipe()
    os.close(read_end)
    closed = open(write_end, "w")
    console = DfxConsole(file=closed)
    with pytest.raises(BrokenPipeError):
        console.print("a table line")
    with contextlib.suppress(BrokenPipeError):  # the close flushes into the pipe again
        closed.close()


def test_quiet_leaves_results_alone_on_stdout(trained, data_dir, tmp_path):
    """``dfx -q COMMAND 2>/dev/null``: results only; notices such as "wrote" go to stderr."""
    model, manifest = trained["model"], trained["manifest"]
    image = next((data_dir / "gan" / "toygan-a").iterdir())
    runs = {
        "split": ["split", data_dir, "--out", tmp_path / "m.csv", "--json", "--force"],
        "evaluate": ["evaluate", "-M", model, "-m", manifest, "--workers", "0",
                     "-o", tmp_path / "r.json", "--plots", tmp_path / "plots"],
        "predict": ["predict", "-M", model, image, "--workers", "0"],
        "train-fusion": ["train-fusion", "-m", manifest, "--base-dir",
                         trained["base"]["dm"].path.parent, "--epochs", "1", "-o",
                         tmp_path / "f.pt", "--workers", "0", "--json"],
    }  # fmt: skip
    for name, args in runs.items():
        loud = invoke(*args)
        assert loud.exit_code == 0, (name, loud.output)
        assert "wrote " not in loud.stdout and loud.stderr.strip(), name  # notices: stderr
        assert ("wrote " in loud.stderr) == (name != "predict"), name
        quiet = invoke("-q", *args)
        assert quiet.exit_code == 0, (name, quiet.output)
        assert quiet.stderr == "", (name, quiet.stderr)
        assert quiet.stdout == loud.stdout or name == "train-fusion", name
    assert json.loads(invoke("-q", *runs["split"]).stdout)["n"] == 600
    assert json.loads(invoke("-q", *runs["train-fusion"]).stdout)["path"] == str(tmp_path / "f.pt")


def test_plain_text_under_no_color_and_off_a_terminal(tmp_path):
    """NO_COLOR: no colour and no bold/italic escapes, in results, errors and help."""
    forced = {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"}
    coloured = run_dfx("backbones", env=forced)
    assert "\x1b[" in coloured.stdout  # the check below can fail
    for args in (["backbones"], ["evaluate", "--help"], ["predict", "-M", tmp_path, "x.png"]):
        done = run_dfx(*args, env=forced | {"NO_COLOR": "1"})
        assert "\x1b[" not in done.stdout + done.stderr, args
    assert "\x1b[" not in invoke("backbones").stdout  # CliRunner: not a terminal


# One meaning per option.


def test_json_is_a_flag_and_output_names_the_results_file(trained, data_dir, tmp_path):
    """``--json``: JSON on stdout instead of tables; ``-o FILE``: the file, tables still
    print; ``-o -`` is stdout; the format comes from the suffix or the flag."""
    model, manifest = trained["model"], trained["manifest"]
    image = next((data_dir / "gan" / "toygan-a").iterdir())
    results_commands = {
        "evaluate": ["evaluate", "-M", model, "-m", manifest, "--workers", "0"],
        "robustness": ["robustness", "-M", model, "-m", manifest, "-p", "mirror", "--workers", "0"],
        "predict": ["predict", "-M", model, image, "--workers", "0"],
    }
    for name, args in results_commands.items():
        alone, dash = invoke(*args, "--json"), invoke(*args, "-o", "-")
        assert alone.exit_code == 0 and dash.exit_code == 0, (name, alone.output)
        assert alone.stdout == dash.stdout, name
        json.loads(alone.stdout.splitlines()[0] if name == "predict" else alone.stdout)
        report = tmp_path / f"{name}.json"
        to_file = invoke(*args, "-o", report)
        assert to_file.exit_code == 0, (name, to_file.output)
        assert report.read_text().strip().startswith(("{", "[")), name
        assert to_file.stdout.strip() and to_file.stdout != alone.stdout, name  # tables stay
        assert f"wrote {report}" in to_file.stderr, name
        no_suffix = tmp_path / f"{name}-results"  # the flag gives the format
        assert invoke("--quiet", *args, "--json", "-o", no_suffix).exit_code == 0, name
        assert no_suffix.read_text() == report.read_text(), name
        assert_user_error(invoke(*args, "-o", tmp_path / "r.txt"), "cannot tell which format")
    for name, args in {
        "backbones": ["backbones"],
        "split": ["split", data_dir, "--out", tmp_path / "m.csv"],
    }.items():
        alone = invoke(*args, "--json")
        assert alone.exit_code == 0, (name, alone.output)
        json.loads(alone.stdout)


def test_evaluate_writes_json_and_csv_files_in_one_run(trained, tmp_path):
    report, table = tmp_path / "report.json", tmp_path / "table.csv"
    result = invoke("evaluate", "-M", trained["model"], "-m", trained["manifest"],
                    "--workers", "0", "-o", report, "-o", table)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "accuracy" in json.loads(report.read_text())["binary"]
    header = table.read_text().splitlines()[0].split(",")
    assert "acc" in " ".join(header) or "accuracy" in " ".join(header), header
    assert "Evaluation on" in result.stdout  # the tables still print
    as_csv = invoke("evaluate", "-M", trained["model"], "-m", trained["manifest"],
                    "--workers", "0", "--csv")  # fmt: skip
    assert as_csv.stdout.strip() == table.read_text().strip()
    both = invoke("evaluate", "-M", trained["model"], "--json", "--csv")
    assert_user_error(both, "choose one of --json and --csv")


def test_json_never_swallows_a_path(trained, data_dir, tmp_path):
    """``--json`` is a flag: the images and folders after it are inputs, never outputs."""
    image, other = sorted((data_dir / "gan" / "toygan-a").iterdir())[:2]
    before = image.read_bytes()
    for inputs in ([image], [image, other], [data_dir / "gan" / "toygan-a", image]):
        result = invoke("predict", "-M", trained["model"], "--json", *inputs, "--workers", "0")
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert records and all("p_fake" in r for r in records)
        assert len(records) > 2 or len(records) == len(inputs)
    assert image.read_bytes() == before
    explained = invoke("explain", "-M", trained["model"], "--json", data_dir / "gan" / "toygan-a",
                       "--out", tmp_path / "x", "--workers", "0")  # fmt: skip
    assert explained.exit_code == 0, explained.output
    assert all("shares" in json.loads(line) for line in explained.stdout.splitlines())


def test_the_old_json_file_spelling_gets_a_hint(trained, tmp_path):
    result = invoke("evaluate", "-M", trained["model"], "--json", tmp_path / "r.json")
    assert_user_error(result, "--json is a flag", "-o FILE")


def test_plots_is_one_folder_option_and_plot_a_hidden_alias(trained, tmp_path):
    common = ["-M", trained["model"], "-m", trained["manifest"], "--workers", "0"]
    assert invoke("evaluate", *common, "--plots", tmp_path / "e").exit_code == 0
    assert (tmp_path / "e" / "roc.png").is_file()
    result = invoke("jpeg-robustness", *common, "--qf", "50", "--plots", tmp_path / "j")
    assert result.exit_code == 0 and (tmp_path / "j" / "jpeg-robustness.png").is_file()
    old = invoke("robustness", *common, "-p", "mirror", "--plot", tmp_path / "old.png")
    assert old.exit_code == 0 and (tmp_path / "old.png").is_file()
    assert "--plot " not in invoke("robustness", "--help").stdout
    assert "--plots" in invoke("robustness", "--help").stdout


def test_model_has_the_short_form_M_and_m_points_there(trained, data_dir):
    image = next((data_dir / "gan" / "toygan-a").iterdir())
    assert invoke("predict", "-M", trained["model"], image).exit_code == 0
    assert_user_error(invoke("predict", "-m", trained["model"], image), "-M or --model")
    assert_user_error(
        invoke("evaluate", "-M", trained["model"], "-m", trained["model"]),
        "is a PyTorch file",
        "not a manifest",
    )


def test_shared_options_have_one_help_text_and_one_validation():
    """Every option name used by several commands has the same help, default rule and range."""
    group = typer.main.get_command(app)
    seen: dict[str, tuple] = {}
    # Options whose meaning differs by command, each documented with its command.
    differing = {"--output", "--batch-size", "--data", "--qf", "--dm", "--gan", "--real",
                 "--backbone", "--image-size", "--target"}  # fmt: skip
    for name in group.list_commands(None):
        for option in group.get_command(None, name).params:
            if option.param_type_name != "option" or option.opts[0] in differing:
                continue
            facts = (option.help, option.opts, getattr(option, "min", None), option.metavar)
            assert seen.setdefault(option.opts[0], facts) == facts, (name, option.opts[0])
    assert {"--json", "--model", "--manifest", "--threshold", "--device", "--seed"} <= set(seen)


def test_help_shows_readable_metavars():
    for name in typer.main.get_command(app).list_commands(None):
        page = invoke(name, "--help").stdout
        assert not re.search(r"<(bool|path|str|int|float|list)", page), name
        assert "{" not in page.split("\n", 3)[1], name  # the usage line: PATH..., not {PATH}...
    page = " ".join(invoke("predict", "--help").stdout.split())
    assert "--output" in page and "-o FILE" in page


# Unreadable files: reported the same way by every command and by the API.


def test_a_missing_file_reads_the_same_in_the_api_and_predict(trained, api_reasons):
    image = next((trained["manifest"].parent / "data" / "real").rglob("*.png"))
    result = invoke("predict", "-M", trained["model"], image, "missing.png", "--json")
    assert result.exit_code == 1  # among images, a missing path is reported in its place
    line = json.loads(result.stdout.splitlines()[-1])
    assert line == api_reasons["missing.png"] | {"path": "missing.png"}


@pytest.mark.parametrize("balanced", ["--balanced", "--no-balanced"])
def test_evaluate_counts_empty_and_truncated_files(trained, folder, api_reasons, balanced):
    result = invoke("evaluate", "-M", trained["model"], "--data", folder, balanced,
                    "--json", "--workers", "0")  # fmt: skip
    assert result.exit_code == 1, result.output
    failures = {Path(f["path"]).name: f["error"] for f in json.loads(result.stdout)["failures"]}
    assert failures == {name: api_reasons[name]["error"] for name in BROKEN}


def test_predict_split_and_robustness_count_them_with_the_same_reasons(
    trained, folder, api_reasons, tmp_path
):
    expected = {name: api_reasons[name]["error"] for name in BROKEN}
    predicted = invoke("predict", "-M", trained["model"], folder, "--json", "--workers", "0")
    records = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert predicted.exit_code == 1
    assert {Path(r["path"]).name: r["error"] for r in records if r["error"]} == expected
    split = invoke("split", folder, "--out", tmp_path / "m.csv", "--json")
    assert split.exit_code == 1, split.output
    document = json.loads(split.stdout)
    assert {Path(f["path"]).name: f["error"] for f in document["failures"]} == expected
    assert document["n"] == 16 and "empty.png" in split.stderr
    robust = invoke("robustness", "-M", trained["model"], "--data", folder, "-p", "mirror",
                    "--json", "--workers", "0")  # fmt: skip
    assert robust.exit_code == 1, robust.output
    failures = json.loads(robust.stdout)["failures"]
    assert {Path(f["path"]).name: f["error"] for f in failures} == expected


# Outputs checked before any work; messages that name the real problem.


def test_outputs_are_checked_before_any_work(trained, data_dir, tmp_path):
    """A bad output fails with exit 2 before torch is even imported (so within a second)."""
    model, manifest = trained["model"], trained["manifest"]
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder should be")
    inside = blocker / "r.json"
    runs = {
        "split": ["split", data_dir, "--out", inside],
        "train-base": ["train-base", "-m", manifest, "--out", blocker],
        "train-fusion": ["train-fusion", "-m", manifest, "--base-dir", tmp_path, "-o", inside],
        "train-baseline": ["train-baseline", "-m", manifest, "-o", inside],
        "evaluate": ["evaluate", "-M", model, "-m", manifest, "-o", inside],
        "jpeg-robustness": ["jpeg-robustness", "-M", model, "-m", manifest, "--plots", blocker],
        "robustness": ["robustness", "-M", model, "-m", manifest, "--csv", "-o", inside],
        "predict": ["predict", "-M", model, data_dir, "-o", inside],
        "audit": ["audit", data_dir, "-o", inside],
        "import-official": ["import-official", "-b", "tiny", "--complete", model, "-o", inside],
        "demo": ["demo", "--out", blocker],
    }
    for name, args in runs.items():
        done = run_dfx(*args)
        errors, torch_loaded = stderr_of(done)
        assert done.returncode == 2, (name, errors)
        assert errors.startswith("error:") and str(blocker) in errors, (name, errors)
        assert not torch_loaded, name
    assert "notes.txt is a file, so it cannot hold" in stderr_of(run_dfx(*runs["evaluate"]))[0]
    assert blocker.read_text() == "a file where a folder should be"


def test_model_paths_that_are_no_model_files_are_named(trained, tmp_path):
    manifest = trained["manifest"]
    state = trained["base"]["dm"].path.with_suffix(".state.pt")
    assert state.is_file()
    cases = {
        tmp_path: "is a folder",
        Path(os.devnull): "not a regular file",
        state: f"is a training resume state, not a model; the model that training writes "
        f"beside it is {state.with_name('dm.pt')}",
        tmp_path / "absent.pt": "does not exist",
    }
    for path, message in cases.items():
        assert_user_error(invoke("evaluate", "-M", path, "-m", manifest), message)


def test_framework_errors_are_one_dfx_line(trained):
    """Bad values and unknown options: one "error:" line, exit 2, no boxed panel."""
    for args, fragment in (
        (["evaluate", "-M", "x.pt", "--qf", "abc"], "'--qf'"),
        (["train-base", "-m", "x.csv", "--val-fraction", "0.95"], "'--val-fraction'"),
        (["evaluate", "-M", "x.pt", "--no-such-thing"], "No such option: --no-such-thing"),
    ):
        result = invoke(*args)
        assert_user_error(result, fragment, "--help")
        assert len(result.stderr.strip().splitlines()) == 1 and "╭" not in result.output


def test_a_global_option_after_the_command_says_where_it_goes(trained):
    result = invoke("evaluate", "-M", trained["model"], "-m", trained["manifest"], "--quiet")
    assert_user_error(result, "--quiet is an option of dfx itself", "before the command")


def test_library_errors_name_no_command_line_option(trained):
    import dfx
    from dfx.errors import DfxError

    detector = dfx.load_detector(trained["model"], device="cpu")
    with pytest.raises(DfxError) as raised:
        detector.resolve_threshold(1.5)
    assert "--" not in str(raised.value) and "between 0 and 1" in str(raised.value)


def _raised_texts(tree) -> list[str]:
    """The string pieces of every ``raise X(...)`` in a module's syntax tree."""
    import ast

    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for part in ast.walk(node.exc):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    texts.append(part.value)
    return texts


def test_no_library_message_spells_a_command_line_option():
    """Library errors name settings as `name`; only the command line turns them into --name."""
    import ast
    import re

    package = Path(dfx.__file__).parent  # the installed package
    library = [p for p in package.rglob("*.py") if "cli" not in p.relative_to(package).parts]
    offenders = [
        f"{path.relative_to(package.parent)}: {text!r}"
        for path in library
        for text in _raised_texts(ast.parse(path.read_text()))
        # A command quoted whole ('dfx split --help') is a pointer, torchrun's options are not ours.
        if re.search(r"(^|[\s(])--[a-z]", re.sub(r"'dfx [^']*'|torchrun --[a-z-]+", "", text))
    ]
    assert len(library) > 40 and not offenders, offenders


def test_the_command_line_names_its_options_in_library_messages(trained, tmp_path):
    from dfx.errors import DfxError
    from dfx.models.inference_settings import check_backend_name

    with pytest.raises(DfxError, match="^`runtime` 'nope' is not one of"):
        check_backend_name("nope")
    image = next((trained["manifest"].parent / "data" / "real").rglob("*.png"))
    result = invoke("predict", "-M", trained["model"], "--runtime", "nope", image)
    assert_user_error(result, "--runtime 'nope' is not one of")
    result = invoke(
        "train-base", "-m", trained["manifest"], "-b", "tiny", "--weights", tmp_path / "none.pt",
        "--epochs", "1", "--out", tmp_path / "base",
    )  # fmt: skip
    assert_user_error(result, f"--weights {tmp_path / 'none.pt'}: no such file")


def test_robustness_reads_its_data_before_torch_loads(trained, tmp_path):
    absent = tmp_path / "absent.csv"
    for command in ("robustness", "jpeg-robustness"):
        done = run_dfx(command, "-M", trained["model"], "-m", absent)
        errors, torch_loaded = stderr_of(done)
        assert done.returncode == 2 and str(absent) in errors and not torch_loaded, errors


@pytest.mark.parametrize(
    ("value", "on"), [("1", True), ("true", True), ("YES", True), ("0", False), ("no", False),
                      ("false", False), ("", False)]
)  # fmt: skip
def test_dfx_debug_takes_one_true_or_yes(value, on, monkeypatch):
    from dfx.cli.flags import env_switch

    monkeypatch.setenv("DFX_DEBUG", value)
    assert env_switch("DFX_DEBUG") is on


def test_dfx_debug_zero_shows_no_traceback(tmp_path):
    done = run_dfx("predict", "-M", tmp_path, "x.png", env={"DFX_DEBUG": "0"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    done = run_dfx("predict", "-M", tmp_path, "x.png", env={"DFX_DEBUG": "1"})
    assert done.returncode == 2 and "Traceback" in done.stderr


# Fast and readable output.


def test_backbones_prints_its_static_table_without_torch():
    done = run_dfx("backbones")
    errors, torch_loaded = stderr_of(done)
    assert done.returncode == 0 and "densenet121" in done.stdout and errors == ""
    assert not torch_loaded


def test_predict_off_a_terminal_prints_one_tab_separated_line_per_input(trained, data_dir):
    images = sorted((data_dir / "gan" / "toygan-a").iterdir())[:3]
    long_name = "x" * 150
    result = invoke("predict", "-M", trained["model"], *images, long_name, "--threshold", "0.4")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["path", "label", "p_dm", "p_gan", "p_real", "p_fake",
                                    "fake", "error", "provenance"]  # fmt: skip
    assert len(lines) == 5 and all(line.count("\t") == 8 for line in lines)
    assert lines[-1] == f"{long_name}\t\t\t\t\t\t\tno such file or folder\t"
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("4 input(s):") and "P(fake) >= 0.4 (--threshold)" in summary


def test_progress_off_a_terminal_is_plain_log_lines(trained):
    result = invoke("evaluate", "-M", trained["model"], "-m", trained["manifest"], "--workers",
                    "0", "--batch-size", "8")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("evaluate:")]
    assert lines[0].startswith("evaluate: started, ") and "elapsed" in lines[-1]
    assert "\r" not in result.stderr and "\x1b" not in result.stderr and "…" not in result.stderr


# --- exit codes and tracebacks ---


SUBPROCESS_TIMEOUT = 120


def test_a_bug_exits_3_in_one_line_and_shows_its_traceback_only_with_debug(monkeypatch, tmp_path):
    import dfx.data.layout

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(dfx.data.layout, "scan_dataset", broken)
    (tmp_path / "data").mkdir()
    plain = invoke("split", tmp_path / "data")
    assert plain.exit_code == 3
    assert "internal error RuntimeError: boom" in plain.stderr
    assert "Traceback" not in plain.stderr and len(plain.stderr.strip().splitlines()) == 1
    debug = invoke("--debug", "split", tmp_path / "data")
    assert debug.exit_code == 3
    assert "Traceback" in debug.stderr and "RuntimeError: boom" in debug.stderr
    # --debug is per invocation: the next run without it is quiet again.
    again = invoke("split", tmp_path / "data")
    assert again.exit_code == 3 and "Traceback" not in again.stderr


@pytest.mark.parametrize("debug", ["", "1"])
def test_dfx_debug_environment_variable_shows_tracebacks(tmp_path, debug):
    env = (
        {**os.environ, "DFX_DEBUG": debug}
        if debug
        else {k: v for k, v in os.environ.items() if k != "DFX_DEBUG"}
    )
    run = subprocess.run(
        [sys.executable, "-m", "dfx", "split", str(tmp_path / "missing")],
        env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
    )  # fmt: skip
    assert run.returncode == 2
    assert ("Traceback" in run.stderr) == bool(debug), run.stderr
    assert "missing" in run.stderr.strip().splitlines()[-1]


# --- an output folder that refuses files; Ctrl-C --------------------------------------------


@pytest.fixture(params=["read-only", "kernel"])
def refusing_folder(request, tmp_path):
    """A folder that takes no new file: mode 0o555 (root ignores it), or under /proc."""
    if request.param == "kernel":
        if not Path("/proc/self").is_dir():
            pytest.skip("needs /proc (Linux)")
        yield Path("/proc") / f"dfx-output-{os.getpid()}"
        return
    if awkward.running_as_root():
        pytest.skip(SKIP_AS_ROOT)
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("command", ["train-base", "predict", "evaluate", "explain"])
def test_an_output_folder_that_refuses_files_is_exit_2_before_any_work(
    trained, refusing_folder, command
):
    image = str(next((trained["manifest"].parent / "data" / "real").rglob("*.png")))
    model, manifest = trained["model"], trained["manifest"]
    args = {
        "train-base": ["train-base", "-m", manifest, "--target", "real", *TINY_RUN,
                       "-o", refusing_folder],
        "predict": ["predict", "-M", model, image, "-o", refusing_folder / "out.json"],
        "evaluate": ["evaluate", "--model", model, "-m", manifest, "--plots", refusing_folder],
        "explain": ["explain", "-M", model, image, "-o", refusing_folder],
    }[command]  # fmt: skip
    result = invoke(*args)
    existing = refusing_folder if refusing_folder.is_dir() else refusing_folder.parent
    assert_user_error(result, f"the folder {existing} does not accept files")
    assert ": started" not in result.stderr  # no progress: nothing was read or trained
    assert not refusing_folder.is_dir() or list(refusing_folder.iterdir()) == []


def interrupted_once_working(args, working, timeout: float = 120) -> tuple[int, str, str]:
    """The installed ``dfx ARGS``, sent SIGINT (Ctrl-C) once ``working(stdout, stderr)``;
    its exit status and output."""
    process = subprocess.Popen(
        [*DFX, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as in a terminal, even where the suite runs with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    out, err = [], []
    readers = [threading.Thread(target=lambda s=s, into=into: into.extend(iter(s.readline, "")),
                                daemon=True)
               for s, into in ((process.stdout, out), (process.stderr, err))]  # fmt: skip
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not working("".join(out), "".join(err)):
            assert process.poll() is None, f"ended ({process.returncode}) first: {''.join(err)}"
            assert time.monotonic() < deadline, f"no work began: {''.join(err)}"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    for reader in readers:
        reader.join(timeout=30)
    return code, "".join(out), "".join(err)


def test_ctrl_c_in_predict_and_evaluate_exits_130(trained):
    data = trained["manifest"].parent / "data"
    slow = ["--device", "cpu", "--batch-size", "1", "--workers", "0"]
    code, out, err = interrupted_once_working(
        ["predict", "-M", trained["model"], data, "--json", *slow],
        lambda out, err: out.count("\n") >= 1,  # a first record: predicting has begun
    )
    assert code == 130, err
    assert 1 <= out.count("\n") < 1200 and "Traceback" not in err
    code, out, err = interrupted_once_working(
        ["evaluate", "--model", trained["model"], "-m", trained["manifest"], *slow],
        lambda out, err: ": started" in err,  # its progress has begun
    )
    assert code == 130, err
    assert out == "" and "Traceback" not in err
