"""What pg_restore is asked to do: its arguments, the passes over an archive, the owners it names."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..pgarchive import TocEntry


def pg_restore_args(dbname: str, jobs: int, archive: str, list_file: str | None = None,
                    no_owner: bool = False) -> list[str]:
    """Arguments after the program name; the same inside a container and on this machine."""
    # A disposable server (no_owner) has no tablespace but the default: objects of the dump's go there.
    args = ["--no-password", "-d", dbname] + (["--no-owner", "--no-tablespaces"] if no_owner else [])
    if jobs > 1:
        args += ["-j", str(jobs)]
    if list_file:
        args += ["-L", list_file]
    return [*args, archive]


@dataclass(frozen=True)
class Pass:
    """One pg_restore run over part of an archive: as the restoring role, or (vetted extensions) as superuser."""

    as_admin: bool
    listing: str | None  # a -L list, or None for every entry
    parallel: bool


def restore_passes(entries: list[TocEntry], skip_extensions: Iterable[str], vetted: frozenset[str],
                   contained: bool, omit: frozenset[int] = frozenset()) -> tuple[list[Pass], list[str]]:
    """How to restore an archive: one pass, or (where a vetted extension must be created by the superuser)
    schemas as the restoring role, those extensions as superuser, then the rest as the restoring role. Entries
    whose dump id is in ``omit`` are left out (a platform's own event triggers)."""
    listing, skipped = restore_list(entries, skip_extensions, omit)
    wanted = [e for e in entries if not (e.desc == "EXTENSION" and e.tag in set(skipped)) and e.dump_id not in omit]
    admin = [e for e in wanted if contained and e.desc == "EXTENSION" and e.tag in vetted]
    if not admin:
        return [Pass(False, listing if skipped or omit else None, True)], skipped

    def lines(chosen: list[TocEntry]) -> str:
        return "".join(f"{e.dump_id}; 0 0 {e.desc} {e.namespace or '-'} {e.tag}\n" for e in chosen)

    schemas = [e for e in wanted if e.desc == "SCHEMA"]
    rest = [e for e in wanted if e.desc != "SCHEMA" and e not in admin]
    passes = [Pass(False, lines(schemas), False)] if schemas else []
    return passes + [Pass(True, lines(admin), False), Pass(False, lines(rest), True)], skipped


def restore_list(entries: Iterable[TocEntry], skip_extensions: Iterable[str],
                 omit: frozenset[int] = frozenset()) -> tuple[str, list[str]]:
    """A ``pg_restore -L`` list of every TOC entry but the skipped extensions and the omitted entries; the second
    value names the extensions skipped."""
    skip = set(skip_extensions)
    lines, skipped = [], []
    for e in entries:
        desc, tag = e.desc, e.tag
        if e.dump_id in omit:
            continue
        if (desc == "EXTENSION" and tag in skip) or (desc == "COMMENT" and tag.startswith("EXTENSION ")
                                                      and tag.split(" ", 1)[1] in skip):
            if desc == "EXTENSION":
                skipped.append(tag)
            continue
        lines.append(f"{e.dump_id}; 0 0 {desc} {e.namespace or '-'} {tag}")
    return "\n".join(lines) + "\n", skipped


# The kinds of object whose owner a dump sets (pg_restore's --no-owner leaves them to the restoring role).
OWNED_KINDS = ("TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "FOREIGN TABLE", "FUNCTION", "PROCEDURE",
               "AGGREGATE", "SCHEMA", "TYPE", "DOMAIN")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def archive_owners(entries: Iterable[TocEntry], owners: frozenset[str]) -> list[tuple[str, str, str]]:
    """(kind, name as the dump writes it, owner) of an archive's objects owned by one of ``owners``."""
    out = []
    for e in entries:
        if e.desc not in OWNED_KINDS or e.owner not in owners:
            continue
        if e.desc == "SCHEMA":
            out.append((e.desc, e.tag, e.owner))
        elif e.desc in ("FUNCTION", "PROCEDURE", "AGGREGATE"):
            name, paren, args = e.tag.partition("(")
            if paren:
                out.append((e.desc, f"{_ident(e.namespace)}.{_ident(name)}({args}", e.owner))
        else:
            out.append((e.desc, f"{_ident(e.namespace)}.{_ident(e.tag)}", e.owner))
    return out
