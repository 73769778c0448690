"""backupcheck's engine: discovery, sniffing, disposable servers, restore and checks. No pytest here."""

__version__ = "0.1.0"
