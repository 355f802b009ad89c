"""Every fenced snippet of README.md and docs/*.md is parsed or run (issue 29, item 4), so the
docs can't drift from the code unnoticed. The files are globbed when the tests are collected: a
doc added later is covered.

- ```sh / ```bash / ```shell: each command line (continuations joined, comments and env-var
  prefixes dropped, `&&`, `;`, `|` and `&` split) must be a kind this file knows: a project CLI
  (`python -m orchestrator.X`, `python -m dashboards.build`, `python bench/X.py`, ...), whose
  arguments go through that command's own argparse parser, so an unknown or misspelled option
  fails; `make TARGET`, whose target must be in the Makefile; `bash SCRIPT`, which must exist; or
  a command of ALLOWED_COMMANDS. Any other line fails rather than being skipped. Sweeps are also
  checked against the registries: the model, `--dataset`, `--set KEY=VALUE` and a shipped `--space`.
- ```toml: parsed; a search space (tables of distribution/low/high/values) also goes through the
  project's own checker (search_spaces.read_space, then the bounds the sweep applies) against the
  family its comments name, else against the families that know all of its hyperparameters.
- ```python: compiled; every import resolves, every `module.attribute` chain exists, no name is
  used that the block does not define; and the block runs, unless NOT_RUN says why it can't.
- ```json / ```yaml: parsed. ```text: output samples and diagrams, not checked. A block without a
  language tag, or with another one, fails.
- Relative links between the docs point at files (and headings) that exist.

Parsers are imported lazily and looked up by module name (code moves between modules): a
module's `build_parser()` where it has one, else its `main(argv)`, stopped right after argparse
parsed the arguments.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SHELL, TOML, PYTHON = {"sh", "bash", "shell"}, {"toml"}, {"python"}
UNCHECKED = {"text"}  # output samples, diagrams, directory layouts
OTHER = {"json", "yaml"}  # parsed only

# Commands of other tools that the docs show and this file does not check, each with its reason.
# A command that is neither here nor a kind checked below fails the test.
ALLOWED_COMMANDS = {
    "pip": "installs packages (extras of this project are checked against pyproject.toml)",
    "ray": "Ray's cluster launcher and job CLI (a sweep after `ray job submit ... --` is checked)",
    "xdg-open": "opens a file in the desktop's viewer",
    "export": "sets an environment variable",
    "tensorboard": "TensorBoard's own CLI",
    "optuna-dashboard": "Optuna's own dashboard CLI",
}
PYTHON_MODULES_ALLOWED = {"pytest": "the test runner", "pip": "installs packages"}
PROJECT_PACKAGES = ("orchestrator", "dashboards", "trainables", "search_spaces")
# Docs that are linked before they exist (being written by someone else); checked once they exist.
PENDING_DOCS: dict[str, str] = {}

# Python blocks that can't run in a test, by a line they contain: each needs what only a sweep or a
# server makes. They are still compiled and their imports and attributes resolved.
NOT_RUN = {
    'model = load_checkpoint("experiments/NAME/best/rank1-...")': "needs a checkpoint a sweep exported",
    'version = client.get_model_version("fmnist-dcgan", "1")': "needs an MLflow server with a registered model",
    'result = run_sweep(SweepOptions("wgan_gp"': "runs a sweep (tests/test_own_family.py runs the same call)",
}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")


def fenced_blocks(path: Path) -> list[Block]:
    blocks, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                      and not lines[j].strip().strip(fence[0])):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        assert j < len(lines), f"{path.relative_to(ROOT)}:{i + 1}: a code block that is never closed"
        blocks.append(Block(path, i + 1, lang.lower(), "\n".join(body) + "\n"))
        i = j + 1
    return blocks


BLOCKS = [b for doc in DOCS for b in fenced_blocks(doc)]


def of(kinds: set[str]) -> list:
    return [pytest.param(b, id=f"{b.where}-{b.lang}") for b in BLOCKS if b.lang in kinds]


def test_the_docs_are_found():
    names = {d.name for d in DOCS}
    assert {"README.md", "options.md", "cluster.md"} <= names, names
    assert of(SHELL) and of(TOML) and of(PYTHON)


def test_every_block_has_a_known_language_tag():
    known = SHELL | TOML | PYTHON | UNCHECKED | OTHER
    bad = [f"{b.where}: {'no language tag' if not b.lang else f'tag {b.lang!r}'}" for b in BLOCKS if b.lang not in known]
    assert not bad, ("give each block a tag this test checks (sh, toml, python, json, yaml) or `text` for output "
                     "samples:\n" + "\n".join(bad))


# --- shell ---------------------------------------------------------------------------------------

def command_lines(text: str) -> list[str]:
    """Logical lines: continuations joined; blank and comment-only lines dropped."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.strip() and not line.strip().startswith("#"):
            out.append(line)
    return out


def commands(line: str) -> list[list[str]]:
    """A line -> its simple commands (split at && || ; | &), env-var prefixes dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    out, current = [], []
    for token in lexer:
        if token and set(token) <= set(";&|"):
            out.append(current)
            current = []
        else:
            current.append(token)
    out.append(current)
    env = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
    commands = [cmd[next((i for i, t in enumerate(cmd) if not env.match(t)), len(cmd)):] for cmd in out]
    return [cmd for cmd in commands if cmd]  # a bare NAME=VALUE sets a shell variable: nothing to check


class _Parsed(Exception):
    def __init__(self, namespace):
        super().__init__()
        self.namespace = namespace


@contextlib.contextmanager
def stop_after_parsing():
    """While it lasts, the first argparse parse that returns raises _Parsed with its namespace, so
    a command's main() parses its arguments with its own parser and goes no further."""
    names = ("parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args")
    originals = {name: getattr(argparse.ArgumentParser, name) for name in names}
    depth = 0

    def wrap(original):
        def parse(self, *args, **kwargs):
            nonlocal depth
            self.allow_abbrev = False  # the docs spell options in full: a prefix may stop being unique
            depth += 1
            try:
                result = original(self, *args, **kwargs)
            finally:
                depth -= 1
            if depth == 0:
                raise _Parsed(result[0] if isinstance(result, tuple) else result)
            return result
        return parse

    for name, original in originals.items():
        setattr(argparse.ArgumentParser, name, wrap(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(argparse.ArgumentParser, name, original)


def parse_with(command: str, call) -> argparse.Namespace:
    """Runs `call` (a parser's parse or a main) until argparse has parsed; fails the test with
    argparse's own message if it refused the arguments."""
    err, refused = io.StringIO(), None
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), stop_after_parsing():
            call()
    except _Parsed as parsed:
        return parsed.namespace
    except SystemExit as e:
        if e.code in (0, None):  # --help
            return argparse.Namespace()
        refused = err.getvalue().strip()
    if refused is not None:
        pytest.fail(f"{command}: its parser refused the arguments: {refused}", pytrace=False)
    pytest.fail(f"{command}: returned without parsing any arguments with argparse; this test can't check "
                f"its options", pytrace=False)


def parse_module_args(module: str, args: list[str], where: str) -> argparse.Namespace:
    command = f"{where}: python -m {module} {shlex.join(args)}"
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{command}: cannot import {module} ({e}); if a refactor moved its command line, "
                    f"update the docs or this module's name")
    if callable(getattr(mod, "build_parser", None)):
        return parse_with(command, lambda: mod.build_parser().parse_args(args))
    if callable(getattr(mod, "main", None)):
        return parse_with(command, lambda: mod.main(args))
    pytest.fail(f"{command}: {module} has no build_parser() (nor a main(argv) to take its parser from): "
                f"this test can't check the options the docs give it")


def parse_script_args(script: Path, args: list[str], where: str) -> argparse.Namespace:
    """`python bench/X.py ARGS`: the script's main(), with sys.argv set, stopped once it parsed."""
    command = f"{where}: python {script.relative_to(ROOT)} {shlex.join(args)}"
    spec = importlib.util.spec_from_file_location(f"_doc_script_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.path.insert(0, str(script.parent))  # the bench scripts import their neighbours (common.py)
    try:
        spec.loader.exec_module(module)
        main = getattr(module, "main", None)
        if not callable(main):
            pytest.fail(f"{command}: {script.name} has no main() to take its parser from")
        sys.argv = [str(script), *args]
        takes_argv = bool(inspect.signature(main).parameters)
        return parse_with(command, (lambda: main(args)) if takes_argv else main)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def known_families(modules=()) -> dict:
    """The built-in families, the example's (examples/*.py, which the docs sweep) and those of the
    command's --family-module, as the sweep loads them."""
    from trainables.models import all_families, load_family_module

    for module in [*sorted((ROOT / "examples").glob("*.py")), *(ROOT / m for m in modules)]:
        load_family_module(str(module))
    return all_families()


def check_sweep(ns: argparse.Namespace, where: str) -> None:
    """What a sweep's parser leaves to later: the registries of models and datasets, --set, and a
    shipped --space, checked as the sweep checks them before Ray starts."""
    from trainables.datasets import DATASETS

    if getattr(ns, "dataset", None):
        assert ns.dataset in DATASETS, f"{where}: unknown dataset {ns.dataset!r}; known: {sorted(DATASETS)}"
    families = known_families(getattr(ns, "family_module", None) or ())
    if not getattr(ns, "model", None):
        return  # --list
    assert ns.model in families, f"{where}: unknown model {ns.model!r}; known: {sorted(families)}"
    family = families[ns.model]
    from search_spaces import parse_overrides

    overrides = parse_overrides(getattr(ns, "set", None) or [], family.defaults)
    space = getattr(ns, "space", None)
    if space and (space.startswith("search_spaces/") or (ROOT / space).is_file()):
        path = ROOT / space
        assert path.is_file(), f"{where}: --space {space} is not in the repository"
        check_space(path.read_text(), family, f"{where}: {space}", overrides)
    elif overrides:
        from search_spaces import space_path

        check_space(space_path(family).read_text(), family, where, overrides)


MAKE_TARGET = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)\s*:(?!=)", re.M)


def check_command(argv: list[str], where: str) -> None:
    name = argv[0]
    command = f"{where}: {shlex.join(argv)}"
    if name in ("python", "python3") or name.endswith(("/python", "/python3")):
        if argv[1:2] == ["-m"] and len(argv) > 2:
            module, args = argv[2], argv[3:]
            if module.split(".")[0] in PROJECT_PACKAGES:
                ns = parse_module_args(module, args, where)
                if module == "orchestrator.sweep" or {"model", "set", "space"} <= set(vars(ns)):
                    from trainables.errors import BadInput

                    try:
                        check_sweep(ns, command)
                    except BadInput as e:
                        pytest.fail(f"{command}: the sweep would refuse it: {e}", pytrace=False)
                return
            assert module in PYTHON_MODULES_ALLOWED, (
                f"{command}: python -m {module} is neither a project CLI nor in PYTHON_MODULES_ALLOWED")
            return
        if len(argv) > 1 and argv[1].endswith(".py"):
            script = ROOT / argv[1]
            assert script.is_file(), f"{command}: {argv[1]} is not in the repository"
            parse_script_args(script, argv[2:], where)
            return
        pytest.fail(f"{command}: a python command this test does not know how to check")
    if name == "make":
        targets = set(MAKE_TARGET.findall((ROOT / "Makefile").read_text())) - {".PHONY"}
        asked = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
        missing = [t for t in asked if t not in targets]
        assert asked and not missing, f"{command}: no such make target {missing}; the Makefile has {sorted(targets)}"
        return
    if name in ("bash", "sh"):
        assert len(argv) > 1 and (ROOT / argv[1]).is_file(), f"{command}: the script is not in the repository"
        return
    if name == "pip":
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for arg in argv[2:]:
            m = re.fullmatch(r"(?:gen-orchestrator|\.)\[([\w,-]+)\]", arg)
            for extra in m.group(1).split(",") if m else []:
                assert extra in extras, f"{command}: pyproject.toml has no extra {extra!r} ({sorted(extras)})"
    if name == "ray":
        for arg in argv[1:]:
            if arg.endswith((".yaml", ".yml")):
                assert (ROOT / arg).is_file(), f"{command}: {arg} is not in the repository"
        if "--" in argv:  # ray job submit ... -- COMMAND
            check_command(argv[argv.index("--") + 1:], where)
    assert name in ALLOWED_COMMANDS, (
        f"{command}: an unknown kind of command; check it in tests/test_docs.py or add {name!r} to ALLOWED_COMMANDS")


@pytest.mark.parametrize("block", of(SHELL))
def test_shell_snippet(block):
    lines = command_lines(block.text)
    assert lines, f"{block.where}: an empty shell block"
    for line in lines:
        for argv in commands(line):
            check_command(argv, block.where)


# --- TOML ----------------------------------------------------------------------------------------

SPACE_FIELDS = {"distribution", "type", "low", "high", "values"}


def check_space(text: str, family, source: str, overrides: dict | None = None) -> None:
    """A search space through the project's own checks, as the sweep applies them before Ray starts:
    read_space (format, the family's hyperparameters), then the bounds of every value it fixes or
    may draw, and the augmentation policies it names."""
    from search_spaces import read_space
    from trainables.family import check_bounds, check_searched_bounds
    from trainables.loop import check_transforms

    space = read_space(text, set(family.defaults), source, overrides or {})
    fixed = {name: value for name, value in space.items() if not isinstance(value, dict)}
    check_bounds(family, fixed)
    check_transforms({**family.defaults, **fixed})
    for name, table in space.items():
        if isinstance(table, dict) and table["distribution"] == "choice":
            for value in table["values"]:
                check_bounds(family, {name: value})
                check_transforms({**family.defaults, **fixed, name: value})
        elif isinstance(table, dict):
            check_searched_bounds(family, name, table)


def comment_words(text: str) -> set[str]:
    return {w for line in text.splitlines() if "#" in line for w in re.findall(r"[a-z0-9_]+", line.split("#", 1)[1])}


@pytest.mark.parametrize("block", of(TOML))
def test_toml_snippet(block):
    try:
        data = tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as e:
        pytest.fail(f"{block.where}: not valid TOML: {e}")
    if not any(isinstance(v, dict) and SPACE_FIELDS & set(v) for v in data.values()):
        return  # not a search space
    from trainables.errors import BadInput

    families = known_families()
    named = sorted(comment_words(block.text) & set(families))
    candidates = named or [n for n, f in families.items() if set(data) <= set(f.defaults)]
    assert candidates, (f"{block.where}: a search space, but no family has all of its hyperparameters "
                        f"{sorted(data)}; name the family in a comment")
    errors = {}
    for name in candidates:
        try:
            check_space(block.text, families[name], block.where)
        except BadInput as e:
            errors[name] = e.args[0] if e.args else str(e)
    if len(errors) == len(candidates) or (named and errors):
        pytest.fail(f"{block.where}: the search space is refused by the sweep's checks:\n"
                    + "\n".join(f"  {name}: {why}" for name, why in errors.items()), pytrace=False)


# --- Python --------------------------------------------------------------------------------------

def bound_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def resolve(module_name: str, attrs: list[str], where: str):
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        pytest.fail(f"{where}: import {module_name} fails: {e}")
    path = module_name
    for attr in attrs:
        if not hasattr(obj, attr) and inspect.ismodule(obj):
            with contextlib.suppress(ImportError):
                importlib.import_module(f"{path}.{attr}")
        assert hasattr(obj, attr), f"{where}: {path} has no attribute {attr!r}"
        obj, path = getattr(obj, attr), f"{path}.{attr}"
    return obj


def dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


@pytest.mark.parametrize("block", of(PYTHON))
def test_python_snippet(block):
    try:
        tree = ast.parse(block.text, block.where)
        compile(tree, block.where, "exec")
    except SyntaxError as e:
        pytest.fail(f"{block.where}: not valid Python: {e}")
    modules = {}  # a name the block binds by `import` -> its module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name, [], block.where)
                if alias.asname:  # import a.b as c: c is a.b
                    modules[alias.asname] = alias.name
                else:  # import a.b: a is a
                    modules[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{block.where}: a relative import"
            for alias in node.names:
                resolve(node.module, [alias.name], block.where)
    for node in ast.walk(tree):
        chain = dotted(node) if isinstance(node, ast.Attribute) else None
        if chain and chain[0] in modules:
            resolve(modules[chain[0]], chain[1:], block.where)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    undefined = sorted(used - bound_names(tree) - set(dir(builtins)))
    assert not undefined, f"{block.where}: uses names it does not define: {undefined}"
    reasons = [why for line, why in NOT_RUN.items() if line in block.text]
    if reasons:
        return  # can't run here: see NOT_RUN
    proc = subprocess.run([sys.executable, "-c", block.text], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{block.where}: the snippet fails when run:\n{proc.stderr[-3000:]}"


def test_every_not_run_entry_names_a_snippet():
    texts = [b.text for b in BLOCKS if b.lang in PYTHON]
    stale = [line for line in NOT_RUN if not any(line in t for t in texts)]
    assert not stale, f"NOT_RUN names snippets no doc has any more: {stale}"


# --- other blocks, links -------------------------------------------------------------------------

def test_json_and_yaml_snippets_parse():
    import yaml

    for block in BLOCKS:
        try:
            if block.lang == "json":
                json.loads(block.text)
            elif block.lang == "yaml":
                yaml.safe_load(block.text)
        except (ValueError, yaml.YAMLError) as e:
            pytest.fail(f"{block.where}: not valid {block.lang}: {e}")


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slugs(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    out, seen, inside = set(), {}, False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
        if inside or not re.match(r"#{1,6} ", line):
            continue
        title = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", line.lstrip("#").strip())
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    text = doc.read_text()
    prose = re.sub(r"^(`{3,}|~{3,}).*?^\1\s*$", "", text, flags=re.M | re.S)
    bad = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        relative = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        if not path.exists():
            if relative not in PENDING_DOCS:
                bad.append(f"{target}: no such file")
            continue
        if anchor and path.suffix == ".md" and anchor not in slugs(path):
            bad.append(f"{target}: {relative} has no heading with the anchor #{anchor}")
    assert not bad, f"{doc.relative_to(ROOT)}: broken links:\n" + "\n".join(bad)


def test_the_readme_links_every_doc():
    linked = set(LINK.findall((ROOT / "README.md").read_text()))
    missing = [d.relative_to(ROOT).as_posix() for d in DOCS[1:] if d.relative_to(ROOT).as_posix() not in linked]
    assert not missing, f"add these to the README's Documentation list: {missing}"
