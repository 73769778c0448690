"""Find the moment a backup was taken in its file or folder name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Most specific first: a pattern with a time beats a date alone.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # ISO 8601, also with dashes for colons and a fraction: 2025-01-15T02-00-00-000Z
    (
        "iso",
        re.compile(
            r"(?<!\d)(?P<Y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})[T_ ](?P<H>\d{2})[:-]?(?P<M>\d{2})[:-]?(?P<S>\d{2})"
            r"(?:[.,-](?P<frac>\d{1,9}))?(?P<tz>Z|[+-]\d{2}:?\d{2})?(?!\d)"
        ),
    ),
    # Supabase dashboard downloads: 15-01-2025@02-00-11
    (
        "dmy",
        re.compile(r"(?<!\d)(?P<d>\d{2})-(?P<m>\d{2})-(?P<Y>\d{4})@(?P<H>\d{2})-(?P<M>\d{2})-(?P<S>\d{2})(?!\d)"),
    ),
    # 20250115_020000, 20250115-020000, 20250115T020000Z, 20250115020000
    (
        "compact",
        re.compile(
            r"(?<!\d)(?P<Y>\d{4})(?P<m>\d{2})(?P<d>\d{2})[_T-]?(?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})(?P<tz>Z)?(?!\d)"
        ),
    ),
    # 2025-01-15 or 20250115 alone
    ("date", re.compile(r"(?<!\d)(?P<Y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})(?!\d)")),
]

_SEPARATORS = "_-.@ "


@dataclass(frozen=True)
class NameTime:
    """A timestamp found in a name, and the name with it taken out."""

    when: datetime
    stem: str  # the name without the timestamp
    zoned: bool = False  # the name says its offset (Z, +01:00): no name_timezone applies


def _build(g: dict[str, str | None]) -> datetime | None:
    try:
        year, month, day = int(g["Y"] or 0), int(g["m"] or 0), int(g["d"] or 0)
        hour, minute, second = int(g.get("H") or 0), int(g.get("M") or 0), int(g.get("S") or 0)
        if not 1990 <= year <= 2200:
            return None
        when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (ValueError, TypeError):
        return None
    frac = g.get("frac")
    if frac:
        when += timedelta(microseconds=int(frac[:6].ljust(6, "0")))
    tz = g.get("tz")
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4]))
        when -= sign * offset  # the name says local time at that offset
    return when


def find_timestamp(name: str) -> NameTime | None:
    """Return the UTC moment written in ``name`` and the rest of the name."""
    for _kind, pattern in _PATTERNS:
        for match in reversed(list(pattern.finditer(name))):
            when = _build(match.groupdict())
            if when is None:
                continue
            before, after = name[: match.start()], name[match.end() :]
            stem = before.rstrip(_SEPARATORS)
            if after.startswith("."):
                rest = ""  # only extensions follow: 'orders_20250115.sql.gz'
            else:
                rest = after.lstrip(_SEPARATORS)
                rest = rest.split(".", 1)[0] if "." in rest else rest
            if stem and rest:
                stem = f"{stem}_{rest}"
            elif rest:
                stem = rest
            return NameTime(when=when, stem=stem, zoned=bool(match.groupdict().get("tz")))
    return None


_EXTENSIONS = (
    ".gz", ".gzip", ".bz2", ".zst", ".zstd", ".lz4", ".xz", ".tgz", ".sql", ".dump", ".backup", ".bak",
    ".tar", ".json", ".bundle", ".pgdump", ".custom", ".dmp", ".psql", ".pg", ".gpg", ".dir", ".out",
)


def strip_extensions(name: str) -> str:
    """``orders_.sql.gz`` -> ``orders_``; only well-known backup suffixes are removed."""
    changed = True
    while changed:
        changed = False
        low = name.lower()
        for ext in _EXTENSIONS:
            if low.endswith(ext) and len(name) > len(ext):
                name = name[: -len(ext)]
                changed = True
                break
    return name


_ROLE_WORDS = {"schema": "schema", "data": "data", "roles": "roles", "globals": "roles"}


def split_role(stem: str) -> tuple[str, str]:
    """``schema_orders`` -> (``orders``, ``schema``); a name that is only a role word keeps no stem."""
    clean = stem.strip(_SEPARATORS)
    low = clean.lower()
    if low in _ROLE_WORDS:
        return "", _ROLE_WORDS[low]
    for word, role in _ROLE_WORDS.items():
        for sep in "_-.":
            if low.startswith(word + sep):
                return clean[len(word) + 1 :].strip(_SEPARATORS), role
            if low.endswith(sep + word):
                return clean[: -len(word) - 1].strip(_SEPARATORS), role
    return clean, ""
