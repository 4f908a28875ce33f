"""Every code block of the docs is exercised: run here, checked against the code, or mirrored by
a named test (docs/developers/docs.md). The tables that restate the code are checked too."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from docblocks import DOCS, REPO, Block, all_blocks, pages

BLOCKS = all_blocks()
KINDS = {"run", "run-repo", "catalog", "config", "usage", "mirror"}


def _id(block: Block) -> str:
    return block.where


def test_every_block_is_exercised():
    bare = [b.where for b in BLOCKS if b.spec is None and b.lang != "text"]
    assert not bare, ("code blocks neither run nor mirrored by a test (add a `% test: ...` "
                      f"comment before each, see docs/developers/docs.md): {bare}")
    unknown = [f"{b.where}: {b.spec}" for b in BLOCKS if b.spec and b.kind not in KINDS]
    assert not unknown, unknown
    assert len(BLOCKS) > 20


# -- run -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folders: dict[Path, Path] = {}

    def folder(page: Path) -> Path:
        if page not in folders:
            folders[page] = tmp_path_factory.mktemp(page.stem)
        return folders[page]
    return folder


def _environment() -> dict[str, str]:
    """The docs' reader: the project's environment first on PATH, no server credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSIRE_", "JUPYTERHUB_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


RUN = [b for b in BLOCKS if b.kind in ("run", "run-repo")]


@pytest.mark.parametrize("block", RUN, ids=_id)
def test_run(block: Block, scratch):
    cwd = REPO if block.kind == "run-repo" else scratch(block.page)
    if block.lang in ("bash", "sh", "console", "shell"):
        argv = ["bash", "-e", "-o", "pipefail", "-c", block.text]
    elif block.lang == "python":
        argv = [sys.executable, "-c", block.text]
    else:
        pytest.fail(f"{block.where}: cannot run a {block.lang!r} block")
    result = subprocess.run(argv, cwd=cwd, env=_environment(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{block.where}:\n{result.stdout}\n{result.stderr}"


# -- catalog and config --------------------------------------------------------------------------

@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "catalog"], ids=_id)
def test_catalog(block: Block):
    from jupyter_osire_llm.core.catalog import parse_catalog
    catalog = parse_catalog(yaml.safe_load(block.text))
    assert not catalog.problems, f"{block.where}: {catalog.problems}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "config"], ids=_id)
def test_config(block: Block):
    from traitlets.config import Config

    from jupyter_osire_llm.server.app import OsireLLM
    if block.lang == "json":
        config = Config(json.loads(block.text))
    else:
        namespace = {"c": Config()}
        exec(compile(block.text, block.where, "exec"), namespace)
        config = namespace["c"]
    known = set(OsireLLM.class_trait_names(config=True))
    settings = dict(config.get("OsireLLM", {}))
    assert settings, f"{block.where}: no OsireLLM setting"
    unknown = sorted(set(settings) - known)
    assert not unknown, f"{block.where}: not OsireLLM traits: {unknown}"
    OsireLLM(config=config)      # the values pass the traits' validation


# -- usage lines ---------------------------------------------------------------------------------

def _subparsers(parser):
    import argparse
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _options(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "usage"], ids=_id)
def test_usage(block: Block):
    (which,) = block.args
    if which == "cli":
        from jupyter_osire_llm.cli import parser
        prefixes, top = ("jupyter osire ",), parser()
    else:
        from jupyter_osire_llm.magics import _parser
        prefixes, top = ("%%osire ", "%osire "), _parser()
    commands = _subparsers(top)
    seen = 0
    for line in block.text.splitlines():
        line = line.split("#", 1)[0].strip()
        prefix = next((p for p in prefixes if line.startswith(p)), None)
        if prefix is None:
            assert not line, f"{block.where}: {line!r} is not a usage line"
            continue
        words = line[len(prefix):].split()
        names = [words[0]] + [w for w in words[1:] if w != "|" and words[words.index(w) - 1] == "|"]
        for name in names:
            assert name in commands, f"{block.where}: no subcommand {name!r}"
            flags = re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", " ".join(words[1:]))
            missing = sorted(set(flags) - _options(commands[name]) - _options(top))
            assert not missing, f"{block.where}: {name} has no option(s) {missing}"
            seen += 1
    assert seen


# -- mirrors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "mirror"], ids=_id)
def test_mirror(block: Block):
    assert block.args, f"{block.where}: mirror names no test"
    for ref in block.args:
        path, _, name = ref.partition("::")
        source = REPO / path
        assert source.is_file(), f"{block.where}: {path} does not exist"
        if name:
            assert re.search(rf"^(async )?def {re.escape(name)}\(", source.read_text(), re.M), \
                f"{block.where}: {path} has no test {name}"


# -- tables that restate the code ----------------------------------------------------------------

def _table_rows(page: Path) -> list[list[str]]:
    rows = []
    for line in page.read_text().splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*-", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _ticks(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_configuration_tables_name_real_traits_with_their_defaults():
    from jupyter_osire_llm.server.app import OsireLLM
    traits = OsireLLM.class_traits(config=True)
    defaults = OsireLLM()
    documented = 0
    rows = [row for page in ("configuration.md", "lifecycle.md")
            for row in _table_rows(DOCS / "admin" / page)]
    for row in rows:
        names = _ticks(row[0])
        if not names or len(row) < 3:
            continue
        for name in names:
            assert name in traits, f"configuration.md: {name} is not an OsireLLM trait"
            documented += 1
            default = _ticks(row[1])
            if len(names) > 1 or not default:
                continue
            try:
                value = ast.literal_eval(default[0])
            except (ValueError, SyntaxError):
                if not re.fullmatch(r"[A-Za-z_]+", default[0]):
                    continue                    # computed defaults (~/.osire/jobs, <data dir>)
                value = default[0]
            actual = getattr(defaults, name)
            assert actual == value, f"configuration.md: {name} default {value!r} != {actual!r}"
    assert documented >= 29


def test_exit_code_table_is_the_cli_s():
    from jupyter_osire_llm.cli import EXIT_CODES
    codes = {int(row[0]) for row in _table_rows(DOCS / "researchers" / "cli.md")
             if row[0].isdigit()}
    assert codes == set(EXIT_CODES)


def test_failure_reasons_and_error_codes_are_the_code_s():
    package = REPO / "jupyter_osire_llm"
    source = "\n".join(p.read_text() for p in package.rglob("*.py"))
    rows = _table_rows(DOCS / "researchers" / "errors.md")
    reasons = [t for row in rows for t in _ticks(row[0]) if " " in t and "reason" not in row[0]]
    assert len(reasons) >= 8
    for reason in reasons:
        assert reason.replace("...", "").strip() in source, f"no such reason: {reason!r}"
    assert "stopped by user" in source
    declared = set(re.findall(r'code = "([a-z_]+)"', source))
    codes = [t for row in rows if row and row[0].isdigit() for t in _ticks(row[1])]
    assert len(codes) >= 10
    assert not sorted(set(codes) - declared), "error codes the code does not have"


def test_rest_routes_named_in_the_docs_exist():
    from jupyter_osire_llm.server.handlers import default_handlers
    patterns = [re.compile(pattern) for pattern, *_ in default_handlers()]
    text = "\n".join(p.read_text() for p in pages())
    routes = set(re.findall(r"`(?:GET\|?|POST|DELETE|PUT|PATCH|\|)*\s*(/osire/(?:api|v1)[^`\s?]*)", text))
    assert len(routes) >= 5
    for route in routes:
        if route.endswith("*"):                      # "everything under": some route is there
            assert any(p.pattern.startswith(route[:-1]) for p in patterns), route
            continue
        concrete = re.sub(r"<[^>]+>", "abc123", route.replace("*", "")).rstrip("/")
        assert any(p.fullmatch(concrete) or p.fullmatch(concrete + "/x") for p in patterns), \
            f"no handler for {route}"


def test_paths_named_in_the_docs_exist():
    text = "\n".join(p.read_text() for p in [*pages(), REPO / "binder" / "README.md"])
    paths = set(re.findall(r"`((?:scripts|tests|benchmarks|binder|etc|jupyter_osire_llm|"
                           r"labextension|sbatch|docs)/[\w./-]*)`", text))
    assert len(paths) >= 10
    missing = sorted(p for p in paths
                     if not (REPO / p.rstrip("/")).exists() and not _ignored_output(p))
    assert not missing, missing


def _ignored_output(path: str) -> bool:
    """A folder the project writes (git-ignored, so absent from a fresh clone)."""
    result = subprocess.run(["git", "check-ignore", "-q", path.rstrip("/") + "/x"], cwd=REPO)
    return result.returncode == 0
