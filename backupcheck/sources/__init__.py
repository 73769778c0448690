"""Where backups come from: one protocol (``base``), and a registry by URL scheme.

A source is a local folder or file (no scheme), or a URL whose scheme is registered here. A remote kind says
how to read its config options, how to list a location (every object once, without reading bytes, as
``base.Place`` and ``base.Listed``), and how to reach objects (``base.Access``: head for metadata, fetch into
the download cache), with its errors as ``base.RemoteError``. ``s3://`` is the one built-in remote kind; no
code outside ``s3.py`` and this package knows its scheme. A team adds a kind with ``register(RemoteKind(...))``
(in its conftest.py, say) and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import RemoteError


@dataclass(frozen=True)
class RemoteKind:
    scheme: str
    example: str  # a URL, for messages: "s3://bucket/prefix/"
    parse_options: Callable[[dict[str, Any], Any, str], Any]  # (table, defaults, where) -> options
    access: Callable[[Any, Path, Any], Any]  # (settings, cache folder, progress) -> RemoteAccess
    list_location: Callable[[Any, str], tuple[Any, list[Any]]]  # (access, url) -> (location, objects)
    check_url: Callable[[str], None]  # raises ValueError naming what is wrong with a URL of this kind
    cannot_read: Callable[[Exception], bool]  # a listing error that is a finding (denied, no bucket), not a crash
    settings: Callable[[], tuple[Any, ...]] = lambda: ()  # its config table's keys (schema.Setting), for the README


KINDS: dict[str, RemoteKind] = {}


def register(kind: RemoteKind) -> RemoteKind:
    KINDS[kind.scheme] = kind
    return kind


def known() -> list[RemoteKind]:
    _load()
    return list(KINDS.values())


def top_keys() -> set[str]:
    """Config tables named like a scheme hold that kind's defaults."""
    return {k.scheme for k in known()}


def scheme_of(source: str) -> str:
    """``s3`` for ``s3://bucket/x``; "" for a local path."""
    head, sep, _ = source.partition("://")
    return head.lower() if sep else ""


def kind_of(source: str) -> RemoteKind | None:
    _load()
    return KINDS.get(scheme_of(source))


def unknown_kind(source: str) -> str:
    """The sentence for a source whose scheme no kind registered."""
    return (f"{source}: no source kind for {scheme_of(source)}:// (known: "
            f"{', '.join(sorted(k.scheme + '://' for k in known()))}; anything else is a local folder or file)")


def is_remote(source: str) -> bool:
    return bool(scheme_of(source))


def local_paths(sources: tuple[str, ...] | list[str]) -> list[Path]:
    return [Path(s) for s in sources if not is_remote(s)]


def remote_access(settings: Any, cache_dir: Path, progress: Any = None) -> Any:
    """The access object for the remote sources of a run, and of the WAL archives its series name under a remote
    prefix (None when every one is local)."""
    archives = [c.wal_archive for c in (settings.defaults, *settings.series.values()) if c.wal_archive]
    kinds = {kind_of(s) for s in (*settings.sources, *archives) if is_remote(s)} - {None}
    if not kinds:
        return None
    if len(kinds) > 1:  # one remote kind per run today; a second registers its own access beside it
        raise ValueError("sources of more than one remote kind in one run are not supported yet")
    kind = next(iter(kinds))
    assert kind is not None
    return kind.access(settings, cache_dir, progress)


def list_remote(settings: Any, access: Any) -> tuple[list[tuple[Any, list[Any]]], list[str]]:
    """List every remote source once; one that cannot be listed is a problem (a failed check), not a crash."""
    remote, problems = [], []
    for url in settings.sources:
        kind = kind_of(url)
        if kind is None:
            if is_remote(url):
                problems.append(unknown_kind(url))
            continue
        try:
            remote.append(kind.list_location(access, url))
        except Exception as exc:
            if not kind.cannot_read(exc):
                raise
            problems.append(str(exc))
    return remote, problems


def _s3() -> Any:
    from . import s3  # boto3 only when an s3:// source is used

    return s3


_LOADED = False


def _load() -> None:
    """Register the built-in remote kinds, their modules imported only when one of their calls is made."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    register(RemoteKind(
        "s3", "s3://bucket/prefix/",
        parse_options=lambda raw, base, where: _s3().parse_options(raw, base, where),
        access=lambda settings, cache, progress: _s3().access_for(settings, cache, progress),
        list_location=lambda access, url: _s3().list_location(access, url),
        check_url=lambda url: _s3().check_url(url),
        cannot_read=lambda exc: isinstance(exc, RemoteError),
        settings=lambda: _s3().SETTINGS,
    ))
