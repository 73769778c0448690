"""Loads all of backupcheck's plugin in this checkout, also where no backups are named: ``./run pytest`` collects
the built-in suites through testpaths (the demo), and our own tests run beside it. Installed, the entry point
loads it (see backupcheck/plugins/entry.py); a name loaded already is not loaded twice."""

from backupcheck.plugins.entry import PLUGINS

pytest_plugins = ["backupcheck.plugins.entry", *PLUGINS]
