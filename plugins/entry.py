"""backupcheck's pytest plugin, loaded at start-up through the ``pytest11`` entry point.

Loading it before the command line is parsed lets pytest know that
``--backups PATH`` takes a value; otherwise PATH would be taken for a test path
and the project's rootdir (and its conftest) would never be found.
"""

pytest_plugins = [
    "backupcheck.plugins.options",
    "backupcheck.plugins.run",
    "backupcheck.plugins.collection",
    "backupcheck.plugins.reporting",
    "backupcheck.plugins.verdict",
    "backupcheck.plugins.history",
    "backupcheck.fixtures.backups",
    "backupcheck.fixtures.servers",
    "backupcheck.fixtures.gate",
]
