"""The docs hold together: every relative link and image of README.md, DEVELOPERS.md and docs/*.md resolves to a file
of the repository that a fresh clone has (and a ``#fragment`` to a heading of it), every ``make`` target a shell block
names exists, every page of docs/ is reachable from the README, and the entry proposed to nerfstudio matches the
plugin's methods.

A picture that a make target draws (the README's turntable, ``make docs-animation``) may be absent from a checkout
only while that target names its path, in its prerequisites or its recipe (make variables expanded): a missing
picture that no rule makes is a broken page."""

from __future__ import annotations

import functools
import importlib.metadata
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
from test_readme_commands import DOCUMENTS, README, ROOT, segments, shell_commands

MAKEFILE = ROOT / "Makefile"
# Pictures drawn by a make target from the demo checkpoint: path in the repository -> the target that draws it.
GENERATED = {"docs/images/turntable.gif": "docs-animation"}
README_MAX_LINES = 160  # the "at most ~150": a page a nerfstudio user reads in two minutes

INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", re.M)
HTML_LINK = re.compile(r"<(?:img|source|video|a)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.I)
WEB_ADDRESS = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//)")


def prose(text: str) -> str:
    """``text`` without its fenced blocks and inline code spans: what a reader sees as links and headings."""
    outside = "\n".join(body for info, body in segments(text) if info is None)
    return re.sub(r"(`+)(?:(?!\1)[^`]|`(?!`))*?\1", " ", outside)


def links(text: str) -> list[str]:
    text = prose(text)
    return [m[1] for pattern in (INLINE_LINK, REFERENCE_LINK, HTML_LINK) for m in pattern.finditer(text)]


def anchors(text: str) -> set[str]:
    """The ``#fragments`` GitHub gives the headings (lower case, punctuation dropped, spaces to ``-``, repeats
    numbered) and explicit ``id``/``name`` anchors."""
    found, seen = set(), {}
    body = "\n".join(body for info, body in segments(text) if info is None)  # code spans count: `a` b -> a-b
    for m in re.finditer(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", body, re.M):
        title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", m[1])
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    found |= set(re.findall(r"<a\b[^>]*\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", text, re.I))
    return found


def makefile(text: str) -> tuple[dict[str, str], dict[str, tuple[list[str], list[str]]]]:
    """A Makefile's variables and rules: target -> (prerequisites, recipe lines), variables not yet expanded."""
    variables: dict[str, str] = {}
    rules: dict[str, tuple[list[str], list[str]]] = {}
    current: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.startswith("\t"):
            for target in current:
                rules[target][1].append(line.strip())
            continue
        line = line.split("#", 1)[0]
        current = []
        if m := re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|::?=|\+=|=)\s*(.*)$", line):
            joined = variables.get(m[1], "") + " " if m[2] == "+=" else ""
            if m[2] != "?=" or m[1] not in variables:
                variables[m[1]] = (joined + m[3]).strip()
        elif m := re.match(r"^([^:=\s][^:=]*?)\s*::?(?!=)(.*)$", line):
            prerequisites, _, recipe = m[2].partition(";")
            current = m[1].split()
            for target in current:
                rules.setdefault(target, ([], []))
                rules[target][0].extend(prerequisites.split())
                if recipe.strip():
                    rules[target][1].append(recipe.strip())
    return variables, rules


def expand(text: str, variables: dict[str, str], depth: int = 0) -> str:
    if depth > 10:
        return text
    return re.sub(
        r"\$[({]([A-Za-z_][A-Za-z0-9_]*)[)}]", lambda m: expand(variables.get(m[1], ""), variables, depth + 1), text
    )


def make_targets(text: str) -> set[str]:
    variables, rules = makefile(text)
    return {expand(t, variables) for t in rules if not t.startswith(".")}


def target_makes(text: str, target: str, path: str) -> bool:
    """Whether ``target`` (or a rule it depends on) names ``path`` in its prerequisites or recipe."""
    variables, raw = makefile(text)
    rules = {expand(t, variables): rule for t, rule in raw.items()}
    todo, done = [target], set()
    while todo:
        name = todo.pop()
        if name in done or name not in rules:
            continue
        done.add(name)
        prerequisites = [expand(p, variables) for p in rules[name][0]]
        words = " ".join([name, *prerequisites, *(expand(r, variables) for r in rules[name][1])])
        if re.search(rf"(^|[\s'\"=])(\./)?{re.escape(path)}($|[\s'\";])", words):
            return True
        todo.extend(prerequisites)
    return False


@functools.cache
def ignored_by_git(path: Path) -> bool:
    try:
        result = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False  # no git here: the existence check still holds
    return result.returncode == 0  # 1: not ignored; 128: not a git checkout


def link_problem(doc: Path, target: str, makefile_text: str | None = None) -> str | None:
    """What is wrong with a link of ``doc`` to ``target``, or None."""
    if WEB_ADDRESS.match(target):
        return None  # a web address: not checked (no network in the tests)
    path, _, fragment = target.partition("#")
    path = unquote(path)
    dest = doc if not path else (ROOT / path.lstrip("/") if path.startswith("/") else doc.parent / path).resolve()
    try:
        relative = dest.relative_to(ROOT).as_posix()
    except ValueError:
        return "points outside the repository"
    if not dest.exists():
        made_by = GENERATED.get(relative)
        if made_by is None:
            return "no such file"
        text = MAKEFILE.read_text() if makefile_text is None else makefile_text
        return None if target_makes(text, made_by, relative) else f"no such file, and `make {made_by}` does not make it"
    if dest != ROOT and ignored_by_git(dest):
        return "git ignores it: a fresh clone does not have it"
    if fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text()):
        return f"no heading #{fragment} in {relative}"
    return None


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_links_and_images_resolve(doc):
    problems = [f"{target}: {p}" for target in links(doc.read_text()) if (p := link_problem(doc, target))]
    assert not problems, f"{doc.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_link_checker_has_teeth(monkeypatch):
    doc = ROOT / "docs" / "page.md"
    assert link_problem(doc, "no-such-page.md") == "no such file"
    assert link_problem(doc, "../README.md#no-such-heading") == "no heading #no-such-heading in README.md"
    assert link_problem(doc, "../../elsewhere.md") == "points outside the repository"
    assert link_problem(doc, "../README.md#results") is None and link_problem(doc, "https://example.org/x") is None
    if (ROOT / ".venv").is_dir():  # make's venv: there, and ignored
        assert link_problem(doc, "../.venv") == "git ignores it: a fresh clone does not have it"
    # A picture a make target draws may be missing from a checkout only where that target names it.
    monkeypatch.setitem(GENERATED, "docs/images/not-drawn-yet.gif", "docs-animation")
    fake = "OUT := docs/images\ndocs-animation: $(OUT)/not-drawn-yet.gif\n$(OUT)/not-drawn-yet.gif:\n\tcp a $@\n"
    assert link_problem(doc, "images/not-drawn-yet.gif", fake) is None
    assert link_problem(doc, "images/not-drawn-yet.gif", "docs-animation:\n\tgenvs-sample --output-dir x\n").startswith(
        "no such file, and `make docs-animation`"
    )
    assert link_problem(doc, "images/never-drawn.gif", fake) == "no such file"
    text = "[a](a.md) `[b](b.md)` ![c](c.png 'title')\n```md\n[d](d.md)\n```\n<img src=\"e.gif\">\n[f]: f.md\n"
    assert links(text) == ["a.md", "c.png", "f.md", "e.gif"]
    assert {"start-up-at-srns-scale", "a-code-span-x", "twice-1"} <= anchors(
        "## Start-up at SRN's scale\n### A `code` span (x)\n```\n# not a heading\n```\n# Twice\n# Twice\n"
    )
    assert "not-a-heading" not in anchors("```\n# not a heading\n```\n")


def test_make_targets_in_commands_exist():
    targets = make_targets(MAKEFILE.read_text())
    named = {
        (doc.relative_to(ROOT).as_posix(), word)
        for doc in DOCUMENTS
        for command in shell_commands(doc.read_text())
        if command[0] == "make"
        for word in command[1:]
        if not word.startswith("-") and "=" not in word
    }
    assert {"demo", "test"} <= {word for doc, word in named if doc == "README.md"}
    missing = sorted(f"{doc}: make {word}" for doc, word in named if word not in targets)
    assert not missing, f"no such make target: {missing}"
    assert {"demo", "test"} <= targets and "$(STAMP)" not in targets


@pytest.mark.parametrize(("path", "target"), GENERATED.items())
def test_pictures_a_make_target_draws_are_named_by_it(path, target):
    text = MAKEFILE.read_text()
    assert target in make_targets(text), f"the docs show {path}, made by `make {target}`: no such target"
    assert target_makes(text, target, path), f"`make {target}` does not name {path}"
    assert path in links(README.read_text()), f"{path} is no longer shown: drop it from GENERATED"


def test_every_docs_page_is_reachable_from_the_readme():
    reached, todo = set(), [README]
    while todo:
        doc = todo.pop()
        if doc in reached:
            continue
        reached.add(doc)
        for target in links(doc.read_text()):
            path = target.partition("#")[0]
            if path.endswith(".md") and not WEB_ADDRESS.match(path):
                dest = (doc.parent / unquote(path)).resolve()
                if dest.is_file():
                    todo.append(dest)
    orphans = sorted(p.relative_to(ROOT).as_posix() for p in DOCUMENTS if p not in reached)
    assert not orphans, f"not linked from README.md (nor from a page it links): {orphans}"


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_external_method_entry_matches_the_plugin():
    """docs/external_method.md's Python block runs against nerfstudio's own ExternalMethod, names the plugin's method
    configs with their descriptions, and installs what the method page installs."""
    from nerfstudio.configs.external_methods import ExternalMethod

    page = (ROOT / "docs" / "external_method.md").read_text()
    (code,) = [body for info, body in segments(page) if info == "python"]
    entries: list = []
    exec(code, {"ExternalMethod": ExternalMethod, "external_methods": entries})
    (entry,) = entries
    methods = {
        e.name: e.load().description
        for e in importlib.metadata.distribution("genvs-ns").entry_points
        if e.group == "nerfstudio.method_configs"
    }
    assert dict(entry.configurations) == methods
    assert entry.pip_package and f"pip install {entry.pip_package}" in entry.instructions
    method_page = (ROOT / "docs" / "nerfstudio_method_page.md").read_text()
    assert ["pip", "install", entry.pip_package] in shell_commands(method_page)
    assert "- [GeNVS](nerfology/methods/genvs.md): " in page and "nerfology/methods/genvs.html" in entry.instructions
