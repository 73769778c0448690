"""Loads backupcheck's plugin when the package is not installed (installed, its entry point already did)."""

pytest_plugins = ["backupcheck.plugins.entry"]
