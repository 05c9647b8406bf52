"""Every command in the shell blocks of README.md, DEVELOPERS.md and docs/*.md parses: ns-train / ns-eval / ns-render /
ns-viewer / ns-export and our genvs-* scripts, each through its real console entry point, in-process, with
``tyro.cli`` stopped after parsing (nothing runs: no file is opened, no model is built).

Placeholders (CFG, D, outputs/...) need no replacing: parsing does not open files. The block reader here is also what
tests/test_docs.py reads the docs' links and make targets with."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = re.compile(r"^(ns-(train|eval|render|viewer|export)|genvs-[a-z-]+)$")
# Info strings of the blocks read as shell; a block in another language (python, bibtex, text, {button-link}) is not.
SHELLS = {"", "bash", "sh", "shell", "console", "zsh"}
OPERATORS = {";", "&&", "||", "|", "&"}
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


def segments(text: str) -> list[tuple[str | None, str]]:
    """``text`` cut at its fenced code blocks, in order: ``(None, prose)`` and ``(info string, block body)``. Fences
    pair as CommonMark pairs them: a closing fence is the opening's character, at least as long, with nothing after
    it."""
    out: list[tuple[str | None, str]] = []
    lines: list[str] = []
    fence, info = "", ""
    for line in text.splitlines():
        m = FENCE.match(line)
        if not fence and m and not (m[1][0] == "`" and "`" in m[2]):
            out.append((None, "\n".join(lines)))
            fence, info, lines = m[1], m[2].strip(), []
        elif fence and m and m[1][0] == fence[0] and len(m[1]) >= len(fence) and not m[2].strip():
            out.append((info, "\n".join(lines)))
            fence, lines = "", []
        else:
            lines.append(line)
    out.append((info if fence else None, "\n".join(lines)))  # an unclosed block runs to the end
    return out


def _without_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a word outside quotes, as the shell reads a comment (``a#b`` is one word)."""
    quote, escaped = "", False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t;&|"):
            return line[:i]
    return line


def shell_commands(text: str) -> list[list[str]]:
    """The simple commands of the shell blocks, as a shell splits them: ``\\`` continuations joined, comments dropped,
    lists cut at ``;``, ``&&``, ``||``, ``|`` and ``&``, leading ``VAR=value`` words dropped."""
    commands = []
    for info, body in segments(text):
        if info is None or info.split(" ")[0].lower() not in SHELLS:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(_without_comment(line), posix=True, punctuation_chars=";&|")
            lexer.whitespace_split, lexer.commenters = True, ""
            words: list[str] = []
            for word in [*lexer, ";"]:
                if word not in OPERATORS:
                    words.append(word)
                    continue
                while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                    words.pop(0)
                if words:
                    commands.append(words)
                words = []
    return commands


def readme_commands(text: str) -> list[list[str]]:
    """The shell blocks' commands that start with one of COMMANDS (a ``.venv/bin/`` prefix dropped)."""
    return [[Path(c[0]).name, *c[1:]] for c in shell_commands(text) if COMMANDS.match(Path(c[0]).name)]


def documented_commands() -> list[tuple[str, list[str]]]:
    """Each command of every document once, with the first document that shows it."""
    seen: dict[tuple[str, ...], str] = {}
    for doc in DOCUMENTS:
        for command in readme_commands(doc.read_text()):
            seen.setdefault(tuple(command), doc.relative_to(ROOT).as_posix())
    return [(doc, list(command)) for command, doc in seen.items()]


DOCUMENTED = documented_commands()


def our_console_scripts() -> set[str]:
    return {e.name for e in importlib.metadata.distribution("genvs-ns").entry_points if e.group == "console_scripts"}


def test_the_block_reader_splits_as_a_shell_does():
    text = (
        "```bash\n.venv/bin/genvs-sample --a 1 \\\n  --b 2   # note\nmake x\n"
        "A=1 genvs-eval --c 'x y' && ns-train genvs --d D; genvs-export a b | tee log\n```\n"
        "genvs-eval --in-prose\n```python\ngenvs-eval = 1\n```\n````md\n```bash\ngenvs-nested\n```\n````\n"
    )
    assert readme_commands(text) == [
        ["genvs-sample", "--a", "1", "--b", "2"],
        ["genvs-eval", "--c", "x y"],
        ["ns-train", "genvs", "--d", "D"],
        ["genvs-export", "a", "b"],
    ]
    assert ["make", "x"] in shell_commands(text) and ["tee", "log"] in shell_commands(text)


def test_the_docs_show_every_command():
    """The README shows a command per task; the docs together show every console script of the package."""
    readme = {c[0] for c in readme_commands(README.read_text())}
    assert readme >= {"ns-train", "ns-viewer", "ns-render", "genvs-sample", "genvs-eval", "genvs-export"}
    shown = {command[0] for _, command in DOCUMENTED}
    assert our_console_scripts() <= shown, f"not in any doc's shell block: {sorted(our_console_scripts() - shown)}"
    trained = {command[1] for _, command in DOCUMENTED if command[0] == "ns-train"}
    assert {"genvs", "genvs-tiny"} <= trained


class _Parsed(Exception):
    pass


def parses(command: list[str], monkeypatch) -> bool:
    """Runs the console script's entry point with ``command``'s arguments; True once tyro parsed them."""
    import tyro

    entries = importlib.metadata.entry_points(group="console_scripts", name=command[0])
    assert entries, f"{command[0]} is not an installed console script"
    (entry,) = entries
    real_cli = tyro.cli

    def parse_only(*args, **kwargs):
        real_cli(*args, **kwargs)
        raise _Parsed

    monkeypatch.setattr(tyro, "cli", parse_only)
    monkeypatch.setattr("sys.argv", command)
    try:
        entry.load()()
    except _Parsed:
        return True
    except SystemExit:  # tyro's usage error (printed above)
        return False
    return False


@pytest.mark.parametrize(("doc", "command"), DOCUMENTED, ids=[f"{d}: {shlex.join(c)}"[:100] for d, c in DOCUMENTED])
def test_documented_command_parses(doc, command, monkeypatch):
    assert parses(command, monkeypatch), f"{doc}: command does not parse: {shlex.join(command)}"


def test_a_broken_command_does_not_parse(monkeypatch):
    assert not parses(["ns-train", "genvs-tiny", "--data", "D", "--pipeline.model.no-such-flag", "1"], monkeypatch)
    assert not parses(["genvs-sample", "--load-config", "CFG", "--output-dir", "o", "--no-such-flag"], monkeypatch)
    assert not parses(["genvs-export", "only-one-path"], monkeypatch)


def test_ns_train_help_lists_what_genvs_uses(monkeypatch, capsys):
    """nerfstudio's ray-batch and per-scene flags, which do nothing here, are hidden; genvs's own are listed."""
    monkeypatch.setenv("COLUMNS", "200")
    assert not parses(["ns-train", "genvs-tiny", "--help"], monkeypatch)  # tyro exits after printing the help
    text = capsys.readouterr().out
    for hidden in ("pixel-sampler", "rays-per-batch", "patch-size", "masks-on-gpu", "collider", "loss-coefficients",
                   "eval-num-rays-per-chunk", "prompt", "camera-res-scale-factor", "``"):  # fmt: skip
        assert hidden not in text
    for shown in ("--pipeline.datamanager.objects-per-batch", "--pipeline.model.precision", "{srn}", "--max-num-iter"):
        assert shown in text
