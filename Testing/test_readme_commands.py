"""Every command shown in the README and the user docs is real: it parses, and the cheap ones run.

Commands are the lines of ```bash / ```sh / ```shell / ```console blocks that start with
``asymseg``, ``python -m asymseg``, ``torchrun`` or ``make`` (backslash continuations joined,
``$`` prompts and ``#`` comments removed, ``NAME=value`` prefixes taken as environment).
Other shell lines (``pip install ...``) are prose for people and are not checked.

1. Every ``asymseg`` command is parsed by the real parser (``asymseg.cli.build_parser``), every
   ``torchrun`` line by torchrun's own parser with its ``-m asymseg ...`` part by ours, and every
   ``make`` target must exist in the Makefile. A command that drifts from the CLI fails here.
2. Each document's commands then run end to end, in document order, in an empty folder (with
   ``ASYMSEG_HOME`` inside it), through the in-process CLI, and must exit 0. The docs are written
   to run as they are: they make their own phantom cases (``asymseg phantom --out cases ...``) and
   refer to them as ``cases/phantom_000`` ... A fenced block whose info string has ``file=NAME``
   (e.g. ```yaml file=run.yaml) is written to NAME when reached. ```python blocks run in the
   same folder, in order, sharing one namespace per document.

   To keep the run short, sizes are shrunk by these documented substitutions (SHRINK):
   ``phantom --size N`` -> 32; ``finetune --iterations N`` -> 2 (3 with ``--resume``, which must
   go beyond the first run) and ``--batch-size`` 2; ``bench losses`` gets ``--repeats 3
   --warmup 1``; in Python, ``iterations=N`` -> 2, ``batch_size=N`` -> 2, ``val_every=N`` -> 1 and
   ``size=(48, 48, 48)`` -> ``(32, 32, 32)``.

   Commands that are too long for a test, or that need more than one process or machine, are
   parsed only (PARSE_ONLY, with the reason and where they are exercised instead).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The user documentation whose commands are checked (docs/RESULTS.md and docs/ROBUSTNESS.md are
#: reports of measured runs, with their own tests).
DOCUMENTS = ("README.md", "docs/CLI.md", "docs/DATA.md", "docs/MODEL_CARD.md", "docs/API.md",
             "docs/TROUBLESHOOTING.md", "docs/SLICER.md", "docs/BENCHMARKS.md")
#: Documents whose ```python blocks run here (docs/SLICER.md's need the Slicer application).
PYTHON_DOCUMENTS = frozenset(DOCUMENTS) - {"docs/SLICER.md"}
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}

#: Commands parsed but not run: (pattern on the command text, reason).
PARSE_ONLY: tuple[tuple[str, str], ...] = (
    (r"^torchrun ", "starts several processes or needs several machines; Testing/test_cli_finetune.py runs "
                    "torchrun against one process"),
    (r"^make ", "make demo runs in Testing/test_demo.py (asymseg demo), make test is the suite itself"),
    (r"^asymseg demo\b", "Testing/test_demo.py runs the demo end to end"),
    (r"^asymseg bench (inference|training)\b", "minutes of CPU; Testing/test_bench_inference.py and the training "
                                                "benchmark's tests run them at toy sizes"),
    (r"^asymseg experiment --config paper-mini\b", "about 40 minutes of CPU a seed; the smoke config runs here"),
)


@dataclass
class Block:
    """A fenced code block: its info string, text and line number."""

    language: str
    options: dict[str, str]
    text: str
    line: int


@dataclass
class Command:
    """One documented shell command."""

    text: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    document: str = ""
    line: int = 0

    @property
    def kind(self) -> str:
        return self.argv[0]

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {self.text}"


def fenced_blocks(text: str) -> Iterator[Block]:
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)```(\S*)(.*)$", lines[i])
        if not match:
            i += 1
            continue
        language = match.group(2).lower()
        options = dict(re.findall(r"(\w+)=(\S+)", match.group(3)))
        start = i + 1
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            i += 1
        yield Block(language, options, "\n".join(lines[start:i]) + "\n", start + 1)
        i += 1


def shell_commands(block: Block, document: str) -> list[Command]:
    """Project commands of a shell block (see the module docstring)."""
    commands = []
    logical: list[tuple[int, str]] = []
    pending, first = "", 0
    for offset, raw in enumerate(block.text.splitlines()):
        line = raw.rstrip()
        if not pending:
            first = block.line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append((first, pending + line))
        pending = ""
    for number, line in logical:
        line = re.sub(r"^\s*\$\s+", "", line)
        tokens = shlex.split(line, comments=True)
        env = {}
        while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
            key, _, value = tokens.pop(0).partition("=")
            env[key] = value
        if not tokens:
            continue
        if tokens[0] in ("python", "python3") and tokens[1:3] == ["-m", "asymseg"]:
            tokens = ["asymseg", *tokens[3:]]
        if tokens[0] in ("asymseg", "torchrun", "make"):
            text = " ".join(shlex.quote(t) for t in tokens)
            commands.append(Command(text, tokens, env, document, number))
    return commands


def document_items(document: str) -> list[Block | Command]:
    """The document's commands, file blocks and Python blocks, in order."""
    items: list[Block | Command] = []
    for block in fenced_blocks((REPO / document).read_text(encoding="utf-8")):
        if block.language in SHELL_LANGUAGES:
            items.extend(shell_commands(block, document))
        elif "file" in block.options or (block.language == "python" and document in PYTHON_DOCUMENTS):
            items.append(block)
    return items


def all_commands() -> list[Command]:
    return [item for doc in DOCUMENTS for item in document_items(doc) if isinstance(item, Command)]


def parse_only_reason(command: Command) -> str | None:
    for pattern, reason in PARSE_ONLY:
        if re.search(pattern, command.text):
            return reason
    return None


def asymseg_argv(command: Command) -> list[str]:
    """The argument list after ``asymseg`` (for torchrun: after ``-m asymseg``)."""
    if command.kind == "asymseg":
        return command.argv[1:]
    if command.kind == "torchrun":
        index = command.argv.index("-m")
        assert command.argv[index + 1] == "asymseg", f"{command}: torchrun must run -m asymseg"
        return command.argv[index + 2:]
    raise ValueError(command.kind)


# -- 1. parsing ----------------------------------------------------------------------------------
COMMANDS = all_commands()


def test_the_documents_show_commands_of_every_kind():
    kinds = {c.kind for c in COMMANDS}
    assert kinds == {"asymseg", "torchrun", "make"}
    subcommands = {asymseg_argv(c)[0] for c in COMMANDS if c.kind != "make" and not asymseg_argv(c)[0].startswith("-")}
    from asymseg.cli import COMMANDS as CLI_COMMANDS

    assert set(CLI_COMMANDS) <= subcommands, f"commands the docs never show: {set(CLI_COMMANDS) - subcommands}"
    readme = [c for c in COMMANDS if c.document == "README.md"]
    assert {"make demo", "make test"} <= {c.text for c in readme}
    assert sum(1 for c in readme if c.kind == "asymseg") >= 12


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_documented_command_parses_with_the_real_parser(command: Command):
    if command.kind == "make":
        makefile = (REPO / "Makefile").read_text()
        for target in (t for t in command.argv[1:] if "=" not in t):
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{command}: no target {target}"
        return
    if command.kind == "torchrun":
        from torch.distributed.run import get_args_parser

        torchrun_args = get_args_parser().parse_args(command.argv[1:])
        assert torchrun_args.module and torchrun_args.training_script == "asymseg", str(command)
    from asymseg.cli import build_parser

    argv = asymseg_argv(command)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 0 and ("--help" in argv or "--version" in argv), f"{command}: rejected by the parser"
        return
    assert callable(args.func)


# -- 2. running ----------------------------------------------------------------------------------
def shrink(argv: list[str]) -> list[str]:
    """The SHRINK substitutions of the module docstring."""
    argv = list(argv)

    def set_option(name: str, value: str, add: bool = False) -> None:
        if name in argv:
            argv[argv.index(name) + 1] = value
        elif add:
            argv.extend([name, value])

    command = [a for a in argv if not a.startswith("-")][:2]
    if command[:1] == ["phantom"]:
        set_option("--size", "32")
    elif command[:1] == ["finetune"]:
        resume = "--resume" in argv
        set_option("--iterations", "3" if resume else "2", add=not resume)
        if not resume:
            set_option("--batch-size", "2", add=True)
    elif command == ["bench", "losses"]:
        argv += ["--repeats", "3", "--warmup", "1"]
    return argv


def shrink_python(code: str) -> str:
    code = re.sub(r"\biterations=\d+", "iterations=2", code)
    code = re.sub(r"\bbatch_size=\d+", "batch_size=2", code)
    code = re.sub(r"\bval_every=\d+", "val_every=1", code)
    return code.replace("size=(48, 48, 48)", "size=(32, 32, 32)")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    from asymseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv, stdout=out, stderr=err)
        except SystemExit as exit_:  # --help, --version
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS)
def test_documented_commands_run_in_document_order(document, tmp_path, monkeypatch):
    workspace = tmp_path / "work"
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))
    namespace: dict = {"__name__": f"docs:{document}"}
    ran = 0
    for item in document_items(document):
        if isinstance(item, Block):
            if "file" in item.options:
                target = workspace / item.options["file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(item.text, encoding="utf-8")
            else:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(shrink_python(item.text), f"{document}:{item.line}", "exec"), namespace)
                ran += 1
            continue
        if parse_only_reason(item) is not None:
            continue
        for key, value in item.env.items():
            monkeypatch.setenv(key, value)
        code, out, err = run_cli(shrink(asymseg_argv(item)))
        assert code == 0, f"{item}\nexit {code}\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}"
        ran += 1
    assert ran or document in ("docs/SLICER.md",), f"{document}: nothing ran"


def test_parse_only_commands_are_few_and_each_has_a_reason():
    skipped = [c for c in COMMANDS if parse_only_reason(c) is not None]
    assert all(len(reason) > 20 for _, reason in PARSE_ONLY)
    assert len(skipped) < len(COMMANDS) / 2, [str(c) for c in skipped]
    run = [c for c in COMMANDS if parse_only_reason(c) is None]
    assert any(asymseg_argv(c)[0] == "finetune" and "--resume" in c.argv for c in run)
    assert any(asymseg_argv(c)[:1] == ["segment"] for c in run)


def test_shrink_keeps_the_command_and_only_makes_it_smaller():
    assert shrink(["phantom", "--out", "cases", "--cases", "4", "--size", "48"]) == [
        "phantom", "--out", "cases", "--cases", "4", "--size", "32"]
    assert shrink(["finetune", "--train-case", "a", "--iterations", "500"]) == [
        "finetune", "--train-case", "a", "--iterations", "2", "--batch-size", "2"]
    assert shrink(["finetune", "--resume", "m.run", "--iterations", "800"]) == [
        "finetune", "--resume", "m.run", "--iterations", "3"]
    assert shrink_python("TrainConfig(iterations=40, batch_size=4, val_every=20)") == \
        "TrainConfig(iterations=2, batch_size=2, val_every=1)"


def test_the_readme_links_to_documents_that_exist():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?:docs|recipes)/[^)#]+)", text)
    assert {"docs/CLI.md", "docs/SLICER.md", "docs/MODEL_CARD.md", "docs/DATA.md", "docs/RESULTS.md",
            "docs/ROBUSTNESS.md"} <= set(links)
    owned = [link for link in links if link not in ("docs/RESULTS.md", "docs/ROBUSTNESS.md")]
    missing = [link for link in owned if not (REPO / link).exists()]
    assert not missing
