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

import pytest

pytest_plugins = ["backupcheck.plugins.options"]

# Loaded in that order (pytest calls a later plugin's hooks first, as it did when they were all listed above).
PLUGINS = (
    "backupcheck.plugins.run",
    "backupcheck.plugins.collection",
    "backupcheck.plugins.reporting",
    "backupcheck.plugins.verdict",
    "backupcheck.plugins.history",
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
