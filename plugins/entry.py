"""backupcheck's pytest plugin, loaded at start-up through the ``pytest11`` entry point.

Loading it before the command line is parsed lets pytest know that
``--backups PATH`` takes a value; otherwise PATH would be taken for a test path
and the project's rootdir (and its conftest) would never be found.

At start it brings only its options. The rest (the engine, psycopg, the
reports) is loaded once the options show a run that verifies backups: in any
other pytest run of an environment it is installed in, it costs the options'
import and changes nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

import pytest


class PlainImport(importlib.abc.MetaPathFinder):
    """Our modules load as Python loads them, from the bytecode pip wrote, not through pytest's assertion
    rewriting. pytest rewrites every module of a plugin's distribution, and where it cannot cache what it
    rewrote (PYTHONDONTWRITEBYTECODE, or a site-packages the user cannot write to) it compiles them all from
    source at every start: 0.3 s (median of 10, ``pytest --backups DIR --co`` installed from the wheel). The
    engine and the plugin hold no test asserts; the suites, which are tests, are still rewritten (left to
    pytest's hook). Placed before that hook in ``sys.meta_path``; only public import machinery is used."""

    def find_spec(self, name: str, path, target=None):  # type: ignore[no-untyped-def]
        if not name.startswith("backupcheck.") or name.startswith("backupcheck.suites"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        return spec if spec is not None and spec.origin is not None else None  # else the next finder decides


if not any(type(f).__qualname__ == "PlainImport" and type(f).__module__ == __name__ for f in sys.meta_path):
    sys.meta_path.insert(0, PlainImport())

pytest_plugins = ["backupcheck.plugins.options"]

# Loaded in that order (pytest calls a later plugin's hooks first, as it did when they were all listed above).
PLUGINS = (  # each after the plugins it imports, so pytest imports every one of them itself (assert rewriting)
    "backupcheck.plugins.run",
    "backupcheck.plugins.collection",
    "backupcheck.plugins.verdict",
    "backupcheck.plugins.history",
    "backupcheck.plugins.reporting",
    "backupcheck.fixtures.backups",
    "backupcheck.fixtures.servers",
    "backupcheck.fixtures.gate",
)


def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """After the options' own hook (tryfirst: the rootdir is recovered and the built-in suites added to ``args``)
    and before the conftests, whose tests may use the fixtures."""
    from .options import asked_for, names_the_suites  # imported by now, through pytest_plugins

    if asked_for(early_config) or names_the_suites(early_config.known_args_namespace.file_or_dir):
        for name in PLUGINS:
            early_config.pluginmanager.import_plugin(name)
