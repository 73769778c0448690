"""Manifest: a backup is the database its manifest describes, byte for byte and, once restored, row for row."""

from __future__ import annotations

from typing import Any

from ..manifest import Manifest
from ..model import Finding
from ..schema import Setting, parse_bool, parse_share

CHECK = "manifest"
SETTINGS = (
    Setting("require_manifest", "manifest", parse_bool, "every backup of the series must have a manifest "
            "(PATH.manifest.json, written by backupcheck dump)", "false"),
    Setting("manifest_tolerance", "manifest", parse_share, "how far a table's rows may differ from a manifest taken "
            "after the dump (backupcheck manifest --for), not in its snapshot", "0.01"),
)


def artifact_matches(key: str, name: str, m: Manifest, found_bytes: int, found_sha: str,
                     files: dict[str, Any] | None = None) -> list[Finding]:
    """The artifact's size and sha256 against the manifest's, before any restore; per file for a folder."""
    want = m.doc["artifact"]
    where = f"{name} against {m.path.name}"
    if want["sha256"] is None or (found_sha == want["sha256"] and found_bytes == want["bytes"]):
        return []  # none recorded: the restore's comparison is what remains
    changed = ""
    if files is not None and want["files"]:
        differ = sorted(set(want["files"]) ^ set(files)) + sorted(
            f for f in set(want["files"]) & set(files) if want["files"][f]["sha256"] != files[f]["sha256"])
        changed = f"; files that differ: {', '.join(differ[:10])}" if differ else ""
    return [Finding(CHECK, key, "the artifact is not the one its manifest describes",
                    f"{want['bytes']:,} bytes, sha256 {want['sha256']}",
                    f"{found_bytes:,} bytes, sha256 {found_sha}{changed}",
                    hint="the file changed after it was written (damage in storage or transfer, or another dump under "
                         "this name): take a new backup", where=where)]


def _differ(want: list[str], have: list[str]) -> str:
    gone = [line for line in want if line not in have]
    new = [line for line in have if line not in want]
    parts = [f"the manifest has {gone[0]!r}"] if gone else []
    parts += [f"the restore has {new[0]!r}"] if new else []
    more = len(gone) + len(new) - len(parts)
    return "; ".join(parts) + (f" (and {more} more difference(s))" if more > 0 else "")


def restore_matches(key: str, m: Manifest, restored: dict[str, Any], tolerance: float) -> tuple[list[Finding], list[str]]:
    """The restored database's figures (``manifest.figures`` on it) against the manifest's: rows per table, content
    fingerprints, definitions, sequences, extensions. Exact when the manifest was taken in the dump's snapshot."""
    findings: list[Finding] = []
    notes: list[str] = []
    doc = m.doc
    exact = m.in_snapshot
    have = restored["tables"]
    rows_rule = "exactly" if exact else f"within ±{tolerance:.0%} (the manifest was taken after the dump, not in " \
                                         f"its snapshot)"
    args = " ".join(doc["pg_dump"]["args"])
    for table, want in sorted(doc["tables"].items()):
        got = have.get(table)
        if not want["dumped"]:
            notes.append(f"{table}: left out on purpose by pg_dump's options ({args})")
            continue
        if got is None:
            findings.append(Finding(
                CHECK, key, f"table {table} is not in the restored backup",
                f"table {table}" + (f" with {want['rows']:,} rows" if want["rows"] is not None else "") +
                " (the database held it when the backup was taken)", "no such table",
                hint="the backup job left it out (a -T, -n or -t option in its pg_dump line?), or the restore lost "
                     "it (see test_restores_without_harmful_errors)"))
            continue
        if want["definition"] != got["definition"] and sorted(want["definition"]) != sorted(got["definition"]):
            findings.append(Finding(CHECK, key, f"the definition of {table} differs from the manifest's",
                                    "the columns, constraints and indexes the database had",
                                    _differ(want["definition"], got["definition"]),
                                    hint="a dump of another schema version, or a restore that lost a constraint or "
                                         "index"))
        if not want["data"] or want["rows"] is None:
            continue
        if got["rows"] is None:
            findings.append(Finding(CHECK, key, f"the rows of {table} could not be counted in the restore",
                                    f"{want['rows']:,} rows", "not counted"))
            continue
        slack = 0 if exact else round(want["rows"] * tolerance)
        if abs(got["rows"] - want["rows"]) > slack:
            findings.append(Finding(
                CHECK, key, f"table {table} holds {'fewer' if got['rows'] < want['rows'] else 'more'} rows than the "
                            f"database had when the backup was taken",
                f"{want['rows']:,} rows {rows_rule}", f"{got['rows']:,} rows",
                hint="rows were lost between the database and the restore (a damaged or edited dump, a COPY block "
                     "cut short)" if got["rows"] < want["rows"] else "the dump holds rows the database did not"))
            continue
        if want["content"] is not None and got["content"] is not None and want["content"] != got["content"]:
            if exact:
                findings.append(Finding(CHECK, key, f"the content of {table} differs from the manifest's fingerprint",
                                        f"fingerprint {want['content']} ({doc['checksums']})",
                                        f"fingerprint {got['content']}, with the same {got['rows']:,} rows",
                                        hint="a value changed between the database and the restore: the dump was "
                                             "damaged or edited"))
            else:
                notes.append(f"{table}: content differs from a manifest taken after the dump (not compared)")
    extra = sorted(set(have) - set(doc["tables"]))
    if extra:
        notes.append(f"tables in the restore that the manifest does not list: {', '.join(extra[:10])}")
    for seq, value in sorted(doc["sequences"].items()):
        got_value = restored["sequences"].get(seq)
        if value is None or not exact:
            continue
        if seq not in restored["sequences"]:
            findings.append(Finding(CHECK, key, f"sequence {seq} is not in the restored backup", f"value {value:,}",
                                    "no such sequence"))
        elif got_value != value:
            findings.append(Finding(CHECK, key, f"sequence {seq} does not have the value the database had",
                                    f"last value {value:,}", f"{got_value if got_value is None else f'{got_value:,}'}",
                                    hint="new rows would collide with restored ones: the dump's setval is missing "
                                         "or wrong"))
    missing_ext = sorted(set(doc["extensions"]) - set(restored["extensions"]))
    if missing_ext:
        findings.append(Finding(CHECK, key, "extensions of the database are not in the restored backup",
                                ", ".join(f"{e} {doc['extensions'][e]}" for e in missing_ext), "absent",
                                hint="see test_restoring_server_fits_the_dump for what the restoring server lacks"))
    for e in sorted(set(doc["extensions"]) & set(restored["extensions"])):
        if doc["extensions"][e] != restored["extensions"][e]:
            notes.append(f"extension {e}: {doc['extensions'][e]} in the database, {restored['extensions'][e]} in the "
                         "restore (the restoring server's version)")
    notes += [f"not recorded when the backup was taken: {line}" for line in doc["unrecorded"]]
    return findings, notes


def unusable(key: str, name: str, why: str) -> Finding:
    return Finding(CHECK, key, "the manifest cannot be used", "a valid manifest (backupcheck dump)", why,
                   hint="a manifest is written whole or not at all: one that does not read was damaged or edited; "
                        "take a new backup", where=name)


def missing(key: str, series: str) -> Finding:
    return Finding(CHECK, key, "the backup has no manifest", "PATH.manifest.json beside the dump (require_manifest "
                   "= true)", "none", hint=f"make the backup with `backupcheck dump`, or set series.{series}."
                   "require_manifest = false")
