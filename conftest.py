"""Loads backupcheck's plugins and fixtures for every run from this folder."""

pytest_plugins = [
    "plugins.options",
    "plugins.run",
    "plugins.collection",
    "plugins.reporting",
    "fixtures.backups",
    "fixtures.servers",
]
