"""Every command in README.md's code blocks parses: ns-train / ns-eval / ns-render / ns-viewer / ns-export and our
genvs-* scripts, each through its real console entry point, in-process, with ``tyro.cli`` stopped after parsing.

Placeholders (CFG, D, outputs/...) need no replacing: parsing does not open files."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
COMMANDS = re.compile(r"^(ns-(train|eval|render|viewer|export)|genvs-[a-z-]+)$")


def readme_commands(text: str) -> list[list[str]]:
    """The commands of the fenced code blocks that start with one of COMMANDS (comments and ``\\`` continuations
    handled as a shell would; a ``.venv/bin/`` prefix dropped)."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and COMMANDS.match(Path(words[0]).name):
                commands.append([Path(words[0]).name, *words[1:]])
    return commands


def test_readme_commands_are_found():
    commands = readme_commands(README.read_text())
    assert {c[0] for c in commands} >= {"ns-train", "ns-eval", "ns-render", "ns-viewer", "genvs-sample"}
    assert readme_commands("```bash\n.venv/bin/genvs-sample --a 1 \\\n  --b 2   # note\nmake x\n```\n") == [
        ["genvs-sample", "--a", "1", "--b", "2"]
    ]


class _Parsed(Exception):
    pass


def parses(command: list[str], monkeypatch) -> bool:
    """Runs the console script's entry point with ``command``'s arguments; True once tyro parsed them."""
    import tyro

    (entry,) = importlib.metadata.entry_points(group="console_scripts", name=command[0])
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


@pytest.mark.parametrize("command", readme_commands(README.read_text()), ids=lambda c: " ".join(c)[:80])
def test_readme_command_parses(command, monkeypatch):
    assert parses(command, monkeypatch), f"README command does not parse: {shlex.join(command)}"


def test_a_broken_command_does_not_parse(monkeypatch):
    assert not parses(["ns-train", "genvs-tiny", "--data", "D", "--pipeline.model.no-such-flag", "1"], monkeypatch)
    assert not parses(["genvs-sample", "--load-config", "CFG", "--output-dir", "o", "--no-such-flag"], monkeypatch)


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
