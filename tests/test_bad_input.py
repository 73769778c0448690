"""Damage planted into real dumps of every format, next to clean earlier backups of the same series.

For each kind of damage: the run exits 1, a check of the damaged backup in the integrity or restore family fails
with a finding that names it, no check of it ends in an error (a fixture that broke) or in a traceback through
our own code, and not one byte of the sources changes.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from . import farm as farmlib
from .conftest import SUITES

# Our own code: a frame in one of these in a check's message is a traceback we caused.
OWN_FRAME = re.compile(r"(?:backupcheck|fixtures|plugins)/\w+\.py:\d+")


def _tests_of(*modules: str) -> set[str]:
    names = set()
    for module in modules:
        tree = ast.parse((SUITES / module).read_text())
        names |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
    return names


JUDGES = _tests_of("test_integrity.py", "test_restore.py")


def _flip(data: bytes, offset: int, mask: int = 0x80) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def _zero_4k(data: bytes, at: float) -> bytes:
    start = int(len(data) * at) // 4096 * 4096
    return data[:start] + bytes(min(4096, len(data) - start)) + data[start + 4096:]


def _inside(data: bytes, needle: bytes, plus: int = 0) -> int:
    found = data.find(needle)
    assert found >= 0, f"{needle!r} is not in the dump"
    return found + plus


def _cut_copy_terminator(data: bytes) -> bytes:
    """Drop the ``\\.`` line ending the last COPY block: the data runs into the statements after it."""
    end = data.rfind(b"\n\\.\n")
    assert end >= 0
    return data[:end + 1] + data[end + 4:]


def _gunzip_flip(data: bytes) -> bytes:
    return _flip(data, len(data) // 2, 0x10)


# name -> (format made by pg_dump, damage applied to the newest backup's file bytes)
FILE_DAMAGE: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "custom-cut-10pct": ("custom", lambda b: b[: len(b) // 10]),
    "custom-cut-half": ("custom", lambda b: b[: len(b) // 2]),
    "custom-cut-last-bytes": ("custom", lambda b: b[:-7]),
    "custom-header-only": ("custom", lambda b: b[:30]),
    "custom-flip-version": ("custom", lambda b: _flip(b, 6, 0x40)),
    "custom-flip-in-toc": ("custom", lambda b: _flip(b, _inside(b, b"CREATE TABLE", 8))),
    "custom-flip-compressed": ("custom", lambda b: _flip(b, int(len(b) * 0.8), 0x08)),
    "custom-zeroed-4k": ("custom", lambda b: _zero_4k(b, 0.6)),
    "random-bytes": ("custom", lambda b: random.Random(7).randbytes(len(b))),
    "tar-cut-half": ("tar", lambda b: b[: len(b) // 2]),
    "tar-without-end-blocks": ("tar", lambda b: b[: -(-len(b.rstrip(b"\0")) // 512) * 512]),
    "tar-zeroed-4k": ("tar", lambda b: _zero_4k(b, 0.5)),
    "plain-cut-in-copy": ("plain", lambda b: b[: _inside(b, b"COPY public.orders", 400)]),
    "plain-unterminated-copy": ("plain", _cut_copy_terminator),
    "plain-header-only": ("plain", lambda b: b[: _inside(b, b"SET statement_timeout")]),
    "plain-flip-in-rows": ("plain", lambda b: _flip(b, _inside(b, b"COPY public.users", 300))),
    "plain-flip-in-ddl": ("plain", lambda b: _flip(b, _inside(b, b"CREATE TABLE public.orders", 3), 0x20 ^ 0x0f)),
    "plaingz-cut": ("plain.gz", lambda b: b[: int(len(b) * 0.7)]),
    "plaingz-flip": ("plain.gz", _gunzip_flip),
}


def _dump(farm: farmlib.Farm, db: str, target: Path, fmt: str) -> Path:
    if fmt == "plain.gz":
        return farmlib.gz(farm.dump(db, target, "plain"))
    return farm.dump(db, target, fmt)


SUFFIX = {"custom": ".dump", "tar": ".tar", "plain": ".sql", "plain.gz": ".sql", "directory": ""}


@pytest.fixture(scope="module")
def damaged(farm: farmlib.Farm, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One series per kind of damage: clean earlier nights, the newest night damaged; returns the folder and
    damage name -> the damaged backup's key."""
    root = tmp_path_factory.mktemp("damaged")
    times = farmlib.nights(farm.now)
    keys = {}
    for name, (fmt, damage) in FILE_DAMAGE.items():
        series = name.replace("-", "_")
        for i, when in enumerate(times):
            path = _dump(farm, farm.states[i], root / series / f"{series}_{when:%Y%m%d_%H%M%S}{SUFFIX[fmt]}", fmt)
            if i == len(times) - 1:
                path.write_bytes(damage(path.read_bytes()))
        keys[name] = f"{series}-{times[-1]:%Y%m%dT%H%M%SZ}"
    # directory format: a member gone, a member cut short, the table of contents with a flipped bit
    for name, spoil in [("dir-missing-member", lambda d: max(d.glob("*.dat.gz"), key=lambda p: p.stat().st_size).unlink()),
                        ("dir-member-cut", lambda d: _truncate(max(d.glob("*.dat.gz"), key=lambda p: p.stat().st_size))),
                        ("dir-toc-flip", lambda d: (d / "toc.dat").write_bytes(
                            _flip((d / "toc.dat").read_bytes(), _inside((d / "toc.dat").read_bytes(), b"CREATE TABLE", 8))))]:
        series = name.replace("-", "_")
        for i, when in enumerate(times):
            path = farm.dump(farm.states[i], root / series / f"{series}_{when:%Y%m%d_%H%M%S}", "directory")
            if i == len(times) - 1:
                spoil(path)
        keys[name] = f"{series}-{times[-1]:%Y%m%dT%H%M%SZ}"
    for p in root.rglob("*"):
        when = farmlib._time_of(p.name, times)
        if when:
            farmlib.stamp(p, when)
    return root, keys


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_damage_of_every_kind_fails_integrity_or_restore_and_nothing_else_breaks(run_suites, damaged):
    root, keys = damaged
    before = _digests(root)
    run = run_suites("--backups", str(root), "-m", "not freshness and not size")
    assert run.ret == 1, run.stdout[-3000:]
    assert _digests(root) == before, "the sources changed"
    assert "Traceback" not in run.stdout and "INTERNALERROR" not in run.stdout
    problems = []
    for name, key in keys.items():
        mine = {test: outcome for test, outcome in run.outcomes.items() if test.endswith(f"[{key}]")}
        if not mine:
            problems.append(f"{name}: no check ran on {key}")
            continue
        errors = sorted(t for t, o in mine.items() if o == "error")
        if errors:
            problems.append(f"{name}: errors in {errors}: {run.messages[errors[0]][:500]}")
        judged = sorted(t for t, o in mine.items() if o == "failed" and t.split("[")[0] in JUDGES
                        and key in run.messages[t])
        if not judged:
            problems.append(f"{name}: no integrity or restore check failed naming {key}: "
                            f"{ {t: o for t, o in mine.items()} }")
        ours = [t for t in mine if OWN_FRAME.search(run.messages[t]) or "bug in backupcheck" in run.messages[t]]
        if ours:
            problems.append(f"{name}: a traceback through our code in {ours[0]}: {run.messages[ours[0]][:800]}")
    # the clean earlier backups of each series stay green in these families
    clean_failed = sorted(t for t, o in run.outcomes.items() if o != "passed" and o != "skipped"
                          and not any(t.endswith(f"[{k}]") for k in keys.values()) and "[" in t
                          and t.split("[")[0] in JUDGES)
    assert problems == [] and clean_failed == [], "\n".join(problems + clean_failed)


def test_a_gzip_member_cut_or_flipped_is_damage_even_when_the_sql_inside_looks_complete(tmp_path):
    """The gzip trailer (CRC32 and length) is what proves a compressed dump whole; both faults are in it."""
    from backupcheck.discovery import discover
    from backupcheck.evidence import EvidenceStore
    from backupcheck.servers.cluster import RunDir

    body = b"-- PostgreSQL database dump\nSELECT 1;\n-- PostgreSQL database dump complete\n"
    whole = gzip.compress(body)
    folder = tmp_path / "gz"
    folder.mkdir()
    (folder / "a_20261101_020000.sql.gz").write_bytes(whole[:-4])
    (folder / "b_20261101_020000.sql.gz").write_bytes(whole[:-8] + _flip(whole[-8:], 0, 0x01))
    with RunDir() as rundir:
        store = EvidenceStore(rundir)
        for backup in discover([folder]).backups():
            problems = [p for a in backup.artifacts for p in store.inspect(a).problems]
            assert problems, backup.key
