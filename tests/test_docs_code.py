"""Every code block of the documentation's pages runs, or at least parses, in the suite.

The pages are the README, docs/**/*.md and benchmarks/README.md (the site includes it):

- ```python blocks run: each page's blocks in order in one namespace, as a reader pasting them
  one after the other would, in a temporary folder and within ``PAGE_SECONDS``; a ``>>>``
  block (```pycon) runs as a doctest in the same namespace. A page whose code needs an
  optional extra that is not installed skips, naming the extra.
- A block that cannot run here (a GPU, the network, pretrained weights, a cluster) says so in
  the page, right before it: ``<!-- not-run: needs a CUDA GPU -->``. It must still compile,
  and each one is listed as a skipped test with its reason (pytest's ``-ra`` summary).
- ```bash / ```console / ```sh blocks: every ``limefast ...`` command parses with the command
  line's own parser (a flag or a choice that does not exist fails); ``make X`` names a target
  of the Makefile; ``pip install 'limefast[extra]'`` extras of pyproject.toml.
- ```text blocks that are a ``limefast`` command's synopsis: every ``--flag`` they show is one
  of that subcommand's, and every choice they list for it is one it takes.
- Every fenced block names its language, so that no code escapes these checks unnoticed.
"""

from __future__ import annotations

import doctest
import re
import shlex
import signal
import textwrap
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", "_build", "jupyter_execute", ".ipynb_checkpoints", "build", ".git"}
PAGES = sorted(p for p in [*ROOT.glob("docs/**/*.md"), ROOT / "README.md",
                           ROOT / "benchmarks" / "README.md"]
               if p.is_file() and not SKIP & set(p.relative_to(ROOT).parts))
# A page's blocks together: CPU seconds (the process's, every thread's; a page that got costly),
# and a wall-clock bound far above them (a page that hangs: on a network, a lock). The whole
# file takes under a minute of CPU.
PAGE_CPU_SECONDS = 40
PAGE_WALL_SECONDS = 180

PYTHON = {"python", "py", "python3", "pycon"}
SHELL = {"bash", "sh", "shell", "console"}
INERT = {"text", "json", "toml", "yaml", "ini", "html", "markdown", "md"}
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<why>.+?)\s*-->$")
# Modules a page's code may need that limefast's core install lacks: without one, the page
# skips with its install command (limefast.optional.install_hint).
OPTIONAL = {"torch", "torchvision", "keras", "lime", "ray", "pyarrow", "fastapi", "uvicorn",
            "httpx", "prometheus_client", "matplotlib", "transformers", "timm", "shap",
            "captum", "cupy", "kserve"}


@dataclass
class Block:
    """One fenced block: its page, the line of its opening fence, its language, its text, and
    the reason of a ``<!-- not-run: ... -->`` right before it (None when it runs)."""

    page: Path
    line: int
    lang: str
    source: str
    not_run: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page (``` and ~~~ fences, indented ones included),
    their text dedented to the fence's indentation."""
    lines = page.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        opening = re.match(r"^(\s*)(`{3,}|~{3,})(.*)$", lines[i])
        if not opening or (opening[2][0] == "`" and "`" in opening[3]):
            i += 1
            continue
        indent, fence, info = opening.groups()
        closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), len(lines))
        body = textwrap.dedent("\n".join(lines[i + 1:end])) + "\n"
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = NOT_RUN.match(before)
        lang = info.split()[0].lower() if info.split() else ""
        out.append(Block(page, i + 1, lang, body, marker["why"] if marker else None))
        i = end + 1
    return out


BLOCKS = {page: fenced_blocks(page) for page in PAGES}


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def python_blocks(page: Path) -> list[Block]:
    return [b for b in BLOCKS[page] if b.lang in PYTHON]


# --- what the pages hold ---------------------------------------------------------------------


def test_fenced_blocks_reads_languages_fences_and_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n```\n<!-- not-run: needs a CUDA GPU -->\n\n"
                    "~~~~bash\nmake test\n~~~~\n- item\n\n  ```\n  indented\n  ```\n"
                    "```{eval-rst}\n.. autofunction:: f\n```\n")
    found = [(b.line, b.lang, b.source, b.not_run) for b in fenced_blocks(page)]
    assert found == [(3, "python", "x = 1\n", None), (8, "bash", "make test\n", "needs a CUDA GPU"),
                     (13, "", "indented\n", None), (16, "{eval-rst}", ".. autofunction:: f\n",
                                                     None)]


def needs_checkout():
    if not (ROOT / "docs").is_dir() or not (ROOT / "Makefile").is_file():
        pytest.skip("no docs/ and Makefile beside the tests (a copy of the suite alone)")


def test_the_pages_have_code():
    needs_checkout()
    runnable = [b for bs in BLOCKS.values() for b in bs if b.lang in PYTHON and not b.not_run]
    assert len(runnable) >= 15, [b.where for b in runnable]


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_block_names_its_language(page):
    """An unlabelled block would be checked by nothing: say what it is (python, bash, console,
    text, json, or a MyST directive)."""
    unnamed = [b.where for b in BLOCKS[page]
               if not (b.lang in PYTHON | SHELL | INERT or b.lang.startswith("{"))]
    assert not unnamed, (f"fenced blocks without a known language at {unnamed}: write ```python,"
                         " ```bash, ```console or ```text")


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_not_run_markers_stand_before_code(page):
    """A ``<!-- not-run -->`` marker stands right before a python block: anywhere else it would
    excuse nothing, or the wrong block."""
    text = page.read_text()
    markers = len(re.findall(r"<!--\s*not-run:", text))
    marked = [b for b in BLOCKS[page] if b.not_run]
    assert markers == len(marked), f"{page_id(page)}: a not-run marker not right before a block"
    wrong = [b.where for b in marked if b.lang not in PYTHON]
    assert not wrong, f"not-run markers before blocks that are not python: {wrong}"


# --- python blocks ---------------------------------------------------------------------------


@contextmanager
def time_limit(cpu_seconds: float, wall_seconds: float, what: str):
    """A TimeoutError in the main thread once the process has used ``cpu_seconds`` of CPU, or
    ``wall_seconds`` have passed (where signals can do it: the main thread, on POSIX)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal,
                                                                                "setitimer"):
        yield
        return

    def expire(signum, _frame):
        spent = (f"{cpu_seconds} s of CPU" if signum == signal.SIGPROF
                 else f"{wall_seconds} s of wall-clock time")
        raise TimeoutError(f"{what} took over {spent}: make its examples cheaper")

    timers = ((signal.SIGPROF, signal.ITIMER_PROF, cpu_seconds),
              (signal.SIGALRM, signal.ITIMER_REAL, wall_seconds))
    previous = {signum: signal.signal(signum, expire) for signum, _, _ in timers}
    for _, timer, seconds in timers:
        signal.setitimer(timer, seconds)
    try:
        yield
    finally:
        for signum, timer, _ in timers:
            signal.setitimer(timer, 0)
            signal.signal(signum, previous[signum])


def test_time_limit_stops_a_costly_page():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    with pytest.raises(TimeoutError, match="0.2 s of CPU"):
        with time_limit(0.2, 30, "a page"):
            while True:
                sum(range(1000))
    with time_limit(0.2, 30, "a page"):
        pass
    time.sleep(0.01)  # the timers are off: nothing fires now


def skip_if_extra_missing(exc: ImportError) -> None:
    """Skip (naming the install command) when ``exc`` is an optional module that is missing;
    anything else is the page's error."""
    from limefast.optional import available, install_hint

    text = str(exc)
    names = [getattr(exc, "name", None) or ""] + re.findall(r"needs ([\w.]+)", text)
    for name in names:
        if name.split(".")[0] in OPTIONAL and not available(name):
            pytest.skip(f"needs {name}: {install_hint(name)}")


def run_block(block: Block, namespace: dict) -> None:
    """Run one block in ``namespace``, its tracebacks pointing at the page's own lines."""
    if block.lang == "pycon" or block.source.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(block.source, namespace, block.where,
                                                   str(block.page), block.line)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS
                                       | doctest.NORMALIZE_WHITESPACE)
        report: list[str] = []
        runner.run(test, out=report.append, clear_globs=False)
        namespace.update(test.globs)  # the doctest ran on a copy
        assert not runner.failures, "".join(report)
        return
    code = compile("\n" * block.line + block.source, str(block.page), "exec")
    exec(code, namespace)  # noqa: S102 - the page's own example


def test_run_block_runs_code_and_doctests_in_one_namespace():
    page, namespace = ROOT / "README.md", {}
    run_block(Block(page, 3, "python", "x = 2\n"), namespace)
    run_block(Block(page, 7, "pycon", ">>> x + 1\n3\n>>> y = x * 5\n"), namespace)
    assert namespace["y"] == 10
    with pytest.raises(AssertionError, match="Expected:"):
        run_block(Block(page, 9, "pycon", ">>> x\n4\n"), namespace)
    with pytest.raises(NameError) as raised:
        run_block(Block(page, 12, "python", "a = 1\nundefined_name\n"), namespace)
    assert raised.traceback[-1].lineno + 1 == 14  # the page's own line


RUN_PAGES = [p for p in PAGES if any(not b.not_run for b in python_blocks(p))]


@pytest.mark.parametrize("page", RUN_PAGES, ids=page_id)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    """The page's python blocks, in order, in one namespace, in an empty folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # no window for a figure
    namespace = {"__name__": "__main__"}
    started, cpu = time.perf_counter(), time.process_time()
    with time_limit(PAGE_CPU_SECONDS, PAGE_WALL_SECONDS, page_id(page)):
        for block in python_blocks(page):
            if block.not_run:
                continue
            try:
                run_block(block, namespace)
            except ImportError as exc:
                skip_if_extra_missing(exc)
                raise
    print(f"{page_id(page)}: {time.perf_counter() - started:.1f} s, "
          f"{time.process_time() - cpu:.1f} s of CPU")


MARKED = [b for p in PAGES for b in python_blocks(p) if b.not_run]


@pytest.mark.parametrize("block", MARKED, ids=[b.where for b in MARKED])
def test_marked_blocks_compile(block):
    """A block the page marks as not run still compiles; the skip lists it, with its reason."""
    if block.lang == "pycon" or block.source.lstrip().startswith(">>>"):
        doctest.DocTestParser().get_examples(block.source)
    else:
        compile(block.source, block.where, "exec")
    pytest.skip(f"{block.where} not run: {block.not_run}")


# --- shell blocks and synopses ---------------------------------------------------------------


def shell_commands(block: Block) -> list[list[str]]:
    """The simple commands of a shell block, each as argv: line continuations joined, comments
    and ``$ `` prompts dropped (a console block's lines without a prompt are output),
    pipelines and lists split, leading ``NAME=value`` assignments and redirections left out."""
    lines, logical = block.source.splitlines(), []
    current = None
    for line in lines:
        if current is not None:
            current += " " + line
        elif block.lang == "console":
            if not line.startswith("$ "):
                continue
            current = line[2:]
        else:
            current = line
        if current.endswith("\\"):
            current = current[:-1]
            continue
        logical.append(current)
        current = None
    if current is not None:
        logical.append(current)
    commands = []
    for text in logical:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv: list = []
        for token in [*lexer, ";"]:
            if token in {"&&", "||", ";", "|", "&", ";;"}:
                argv = [a for a in argv if a is not None]
                if argv:
                    commands.append(argv)
                argv = []
            elif re.fullmatch(r"[<>]+&?", token):  # a redirection: its target follows
                if argv and isinstance(argv[-1], str) and argv[-1].isdigit():  # 2>&1's 2
                    argv.pop()
                argv.append(None)
            elif argv and argv[-1] is None:
                argv.pop()
            elif not argv and re.fullmatch(r"[A-Za-z_]\w*=.*", token):
                continue
            else:
                argv.append(token)
    return commands


def test_shell_commands_reads_continuations_prompts_and_lists():
    page = ROOT / "README.md"
    bash = Block(page, 1, "bash", "make test JOBS=0   # the suite\nX=1 limefast explain a.png \\\n"
                 "    --out d && pip install 'limefast[torch]' > log 2>&1 &\n")
    assert shell_commands(bash) == [["make", "test", "JOBS=0"],
                                    ["limefast", "explain", "a.png", "--out", "d"],
                                    ["pip", "install", "limefast[torch]"]]
    console = Block(page, 1, "console", "$ limefast serve --model m &\nserving\n$ curl -s \\\n"
                    "    'http://x/?a=1&b=2'\n")
    assert shell_commands(console) == [["limefast", "serve", "--model", "m"],
                                       ["curl", "-s", "http://x/?a=1&b=2"]]


def parser():
    from limefast.cli.commands import build_parser

    return build_parser()


def subparsers(top) -> dict:
    import argparse

    action = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    targets = set()
    for names in re.findall(r"^([A-Za-z0-9_.\- ]+?)\s*:(?![=:])", text, flags=re.M):
        targets.update(names.split())
    return targets


def extras() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, flags=re.M))


def check_command(argv: list[str], top, targets: set[str], known_extras: set[str]) -> str | None:
    """Why ``argv`` is wrong, or None: a ``limefast`` command that does not parse or abbreviates
    a flag (argparse takes ``--num-sample``), a ``make`` target that does not exist, a ``pip
    install`` of an extra that does not exist."""
    program = Path(argv[0]).name
    args = argv[1:]
    if re.fullmatch(r"python[\d.]*", program) and args[:1] == ["-m"] and len(args) > 1:
        program, args = args[1], args[2:]
    if program in ("limefast", "limefast.cli"):
        try:
            parsed = top.parse_args(args)
        except SystemExit as exc:
            return f"`{shlex.join(argv)}` does not parse (exit status {exc.code})"
        flags = {s for a in subparsers(top)[parsed.command]._actions for s in a.option_strings}
        short = [a.split("=")[0] for a in args if a.startswith("--") and a != "--"
                 and a.split("=")[0] not in flags]
        if short:
            return f"`{shlex.join(argv)}` abbreviates {short}: write the whole flag"
    elif program == "make":
        unknown = [a for a in args if not a.startswith("-") and "=" not in a
                   and a not in targets]
        if unknown:
            return f"`{shlex.join(argv)}`: no Makefile target {unknown}"
    elif program == "pip" and args[:1] == ["install"]:
        for requirement in args[1:]:
            found = re.fullmatch(r"(limefast|\.|\./|\.\./\S*)?\[([^\]]+)\]", requirement)
            if found:
                unknown = sorted(set(e.strip() for e in found[2].split(",")) - known_extras)
                if unknown:
                    return f"`{shlex.join(argv)}`: pyproject.toml has no extra {unknown}"
    return None


def synopsis_errors(block: Block, top) -> list[str]:
    """A text block whose lines start with ``limefast SUBCOMMAND``: each ``--flag`` shown must
    be one of that subcommand's, and each ``a|b|c`` shown after a flag with choices must list
    choices it takes."""
    commands = subparsers(top)
    errors, sub = [], None
    for line in block.source.splitlines():
        head = re.match(r"^\$?\s*limefast\s+([\w-]+)", line)
        if head:
            sub = commands.get(head[1])
            if sub is None:
                errors.append(f"no subcommand `limefast {head[1]}`")
                continue
        if sub is None:
            continue
        options = {s: a for a in sub._actions for s in a.option_strings}
        for flag, value in re.findall(r"(--[a-z][a-z0-9-]*)(?:[ =]([\w.|-]+))?", line):
            if flag not in options:
                errors.append(f"`limefast {sub.prog.split()[-1]}` has no {flag}")
            elif value and "|" in value and options[flag].choices:
                wrong = [v for v in value.split("|") if v not in options[flag].choices]
                if wrong:
                    errors.append(f"{flag} takes none of {wrong} (it takes "
                                  f"{sorted(options[flag].choices)})")
    return errors


def test_the_checks_catch_wrong_commands():
    needs_checkout()
    top, targets, known = parser(), makefile_targets(), extras()
    assert {"test", "docs", "demo", "install-check", "bench", "lint"} <= targets
    assert {"torch", "serve", "dataset", "docs"} <= known
    good = [["limefast", "explain", "a.png", "--model", "resnet18", "--out", "d"],
            ["python", "-m", "limefast.cli", "compare", "a.png", "--model", "m", "--out", "d"],
            ["make", "test", "JOBS=0"], ["pip", "install", "limefast[serve,torch]"],
            ["pip", "install", "./[torch]"], ["curl", "-s", "x"]]
    assert [check_command(argv, top, targets, known) for argv in good] == [None] * len(good)
    bad = [["limefast", "explain", "a.png", "--model", "m", "--out", "d", "--no-such-flag"],
           ["limefast", "explain", "a.png", "--model", "m", "--out", "d", "--num-sample", "9"],
           ["limefast", "explain", "--model", "m"], ["make", "no-such-target"],
           ["pip", "install", "limefast[no-such-extra]"]]
    assert all(check_command(argv, top, targets, known) for argv in bad)
    text = Block(ROOT / "README.md", 1, "text",
                 "limefast explain IMAGE... --model NAME [--method lime|shap] [--nope 1]\n"
                 "limefast nothing --x\n")
    assert synopsis_errors(text, top) == [
        "--method takes none of ['shap'] (it takes ['drise', 'kernelshap', 'lime'])",
        "`limefast explain` has no --nope", "no subcommand `limefast nothing`"]


COMMAND_PAGES = [p for p in PAGES
                 if any(b.lang in SHELL or (b.lang == "text" and "limefast " in b.source)
                        for b in BLOCKS[p])]


@pytest.mark.parametrize("page", COMMAND_PAGES, ids=page_id)
def test_commands_parse(page, capsys):
    """The page's shell commands: ``limefast`` ones parse, ``make`` targets and ``pip``
    extras exist; its command synopses show real flags and choices."""
    top, targets, known = parser(), makefile_targets(), extras()
    errors = []
    for block in BLOCKS[page]:
        if block.lang in SHELL:
            for argv in shell_commands(block):
                why = check_command(argv, top, targets, known)
                if why:
                    errors.append(f"{block.where}: {why}: {capsys.readouterr().err.strip()}")
        elif block.lang == "text":
            errors += [f"{block.where}: {why}" for why in synopsis_errors(block, top)]
    assert not errors, "\n".join(errors)
