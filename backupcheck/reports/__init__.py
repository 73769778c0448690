"""Reports, engine side: every format is a writer of the results document (results.json), registered here by
name with the file or folder it writes; a single run (plugins/reporting.py) and a merge of shards (merge.py) use
the same writers, so a new format is one function and one ``register`` call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import results
from . import render


@dataclass(frozen=True)
class Writer:
    name: str
    target: str  # the file or folder it writes, inside the reports folder
    write: Callable[..., None]  # (document, path, **extras) -> None


WRITERS: dict[str, Writer] = {}
_LOADED = False


def register(writer: Writer) -> Writer:
    """Add a writer (after the built-in ones, whichever is registered first)."""
    _load()
    WRITERS[writer.name] = writer
    return writer


def _text(render: Callable[[dict[str, Any]], str]) -> Callable[..., None]:
    def write(document: dict[str, Any], path: Path, **_: Any) -> None:
        path.write_text(render(document))
    return write


def _results(document: dict[str, Any], path: Path, **_: Any) -> None:
    results.write(document, path)


def _load() -> None:
    """The built-in writers, registered on first use (their renderers are imported only then)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True

    for w in (Writer("results", "results.json", _results),
              Writer("html", "report.html", _text(render.html_report)),
              Writer("junit", "junit.xml", lambda document, path, **_: render.junit(document, path)),
              Writer("allure", "allure-results", lambda document, path, attachments=None, **_:
                     render.allure(document, path, attachments, clean=True)),
              Writer("markdown", "summary.md", _text(render.markdown))):
        WRITERS[w.name] = w


BUILTIN = ("results", "html", "junit", "allure", "markdown")


def added() -> list[Writer]:
    """The writers a team registered (a single run writes them beside its own reports)."""
    _load()
    return [w for name, w in WRITERS.items() if name not in BUILTIN]


def writer(name: str) -> Writer:
    _load()
    return WRITERS[name]


def write_all(document: dict[str, Any], folder: Path, names: tuple[str, ...] | None = None, **extras: Any) -> None:
    """Write the document in every registered format (or those named) into ``folder``."""
    _load()
    folder.mkdir(parents=True, exist_ok=True)
    for name in names or tuple(WRITERS):
        w = WRITERS[name]
        w.write(document, folder / w.target, **extras)
