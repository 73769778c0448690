"""The README stays true: its config example parses, its options exist, CI runs its test command."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from backupcheck.settings import build

from .conftest import REPO

README = (REPO / "README.md").read_text()


def test_the_config_example_is_valid(tmp_path):
    block = re.search(r"```toml\n(.*?)```", README, re.S)
    assert block is not None
    data = tomllib.loads(block.group(1))
    settings = build({}, data, tmp_path / "backupcheck.toml", tmp_path)
    shop = settings.for_series("shop")
    assert shop.rto is not None and shop.critical_tables and shop.relations and shop.severity == "critical"


def test_every_toml_and_json_example_parses(tmp_path):
    import json

    blocks = re.findall(r"```(toml|json)\n(.*?)```", README, re.S)
    assert len(blocks) >= 3
    for kind, text in blocks:
        if kind == "json":
            json.loads(text)
        else:
            build({}, tomllib.loads(text), tmp_path / "backupcheck.toml", tmp_path)


def test_every_option_the_readme_names_exists(pytester):
    help_text = pytester.runpytest_subprocess("--help", "-p", "backupcheck.plugins.options").stdout.str()
    others = {"--help", "--symmetric", "--cipher-algo",  # gpg's own
              "--list", "--schema-only", "--no-owner", "--clean",  # pg_restore's, pg_dump's, pg_dumpall's
              "--no-tablespaces", "--exclude-table-data", "--compress", "--snapshot",  # pg_restore's, pg_dump's
              "--type",  # pgbackrest's
              "--size"}  # the benchmarks' (bench/*.py --size 1gb)
    named = set(re.findall(r"(--[a-z][a-z-]+)", README)) - others
    import subprocess
    import sys

    commands = "".join(subprocess.run([sys.executable, "-m", "backupcheck", command, "--help"], capture_output=True,
                                      text=True, check=True).stdout  # the backupcheck command's own options
                       for command in ("evidence", "merge", "dump", "manifest"))
    offered = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", help_text + commands))
    missing = sorted(named - offered)
    assert missing == []


def test_ci_runs_the_readmes_test_command():
    commands = re.search(r"```sh\n(.*?)```", README, re.S)
    assert commands is not None
    lines = [line.split("#")[0].strip() for line in commands.group(1).splitlines()]
    main_job, our_tests = lines[0], lines[1]
    assert main_job == "./run pytest"
    assert our_tests in Path(REPO / ".ci" / "run").read_text()


def test_the_constraints_pin_every_dependency_within_its_range():
    """./run (the README's test command, and CI) installs with constraints.txt: each dependency the package
    declares, dev extras included, is pinned there to a version its range accepts."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[canonicalize_name(name)] = version.strip()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for text in declared:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{req.name}=={pinned[name]} is not in {req}"
    assert "-c \"$here/constraints.txt\"" in (REPO / "run").read_text()


def test_the_settings_tables_are_the_declared_settings():
    """The README's tables of settings are generated from the families' and source kinds' SETTINGS."""
    from backupcheck.settings import table_markdown

    block = re.search(r"<!-- settings: generated[^\n]*-->\n(.*?)<!-- end of settings -->", README, re.S)
    assert block, "the README lost its generated settings tables"
    assert block.group(1) == table_markdown(), (
        "README.md's settings tables differ from the declarations: replace them with the output of "
        ".venv/bin/python -c 'from backupcheck.settings import table_markdown; print(table_markdown(), end=\"\")'")


def test_every_key_of_the_example_config_is_declared():
    """Each key the README's example gives a series is in the generated table, and every declared key parses."""
    from backupcheck.settings import series_schema

    block = re.search(r"```toml\n(.*?)```", README, re.S)
    data = tomllib.loads(block.group(1))
    declared = series_schema()
    assert set(data["series"]["shop"]) <= set(declared)
    physical = re.search(r"## Physical backups and PITR.*?```toml\n(.*?)```", README, re.S)
    assert physical, "the physical backups section lost its example"
    pitr = tomllib.loads(physical.group(1))["series"]["shop"]
    assert set(pitr) <= set(declared)
    assert set(declared) - set(data["series"]["shop"]) - set(data["defaults"]) - set(pitr) <= {
        "encryption", "kms_key_id", "tables"}


def test_run_leaves_what_pytest_rewrites_compiled():
    """./run's install caches pytest's rewritten suites (and the pytest plugins of other packages): with
    PYTHONDONTWRITEBYTECODE set, as on many CI images, no run writes them and every process start would rewrite
    and compile them again."""
    installed = REPO / ".venv" / ".installed"
    if not installed.exists() or installed.stat().st_mtime < (REPO / "run").stat().st_mtime:
        pytest.skip("the virtual environment was not installed by this ./run (run ./run once to install it)")
    cached = {p.name.split(".")[0] for p in (REPO / "suites" / "__pycache__").glob(f"*-pytest-{pytest.__version__}.pyc")}
    suites = {p.stem for p in (REPO / "suites").glob("test_*.py")}
    assert suites <= cached, f"not cached: {sorted(suites - cached)}"
