"""Tell an artifact's format from its bytes, never from its name."""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import io
import lzma
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .arriving import open_bytes

_MAGIC = [
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\xfd7zXZ\x00", "xz"),
]

PEEK = 64 * 1024


class UnreadableError(Exception):
    """The bytes could not be read or decompressed."""


def _gzip_reader(raw: BinaryIO) -> BinaryIO:
    """gzip through ISA-L: Python's gzip reader over a faster inflate (three times zlib's speed on a dump, read
    twice: the scan, then the restore), the same members, CRCs and lengths checked, the same errors."""
    from isal import igzip

    return igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]


def _open_layer(kind: str, raw: BinaryIO) -> BinaryIO:
    if kind == "gzip":
        return _gzip_reader(raw)
    if kind == "bz2":
        return bz2.BZ2File(raw, mode="rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")  # type: ignore[return-value]
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    if kind == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameFile(raw, mode="rb")  # type: ignore[return-value]
    raise ValueError(kind)


def compression_of(head: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


@contextlib.contextmanager
def open_decompressed(path: Path, layers: tuple[str, ...]) -> Iterator[BinaryIO]:
    """Open ``path`` with every compression layer peeled off."""
    with contextlib.ExitStack() as stack:
        stream: BinaryIO = stack.enter_context(open_bytes(path))
        for kind in layers:
            stream = stack.enter_context(_open_layer(kind, stream))  # type: ignore[arg-type]
        yield stream


def _peek_layers(path: Path) -> tuple[tuple[str, ...], bytes, str]:
    """Peel compression layers off the start of ``path``; return (layers, head, error)."""
    layers: list[str] = []
    for _ in range(4):
        try:
            with open_decompressed(path, tuple(layers)) as stream:
                head = stream.read(PEEK)
        except Exception as exc:  # any decompressor's error means the same thing here
            return tuple(layers), b"", f"cannot decompress the start of the file ({type(exc).__name__}: {exc})"
        kind = compression_of(head)
        if kind is None:
            return tuple(layers), head, ""
        layers.append(kind)
    return tuple(layers), b"", "more than four nested compression layers"


def _looks_like_sql(text: str) -> bool:
    for line in text.splitlines()[:400]:
        s = line.strip()
        if not s or s.startswith("--") or s.startswith("/*"):
            continue
        word = s.split(None, 1)[0].upper().rstrip(";")
        return word in {
            "SET", "SELECT", "CREATE", "INSERT", "COPY", "BEGIN", "ALTER", "DROP", "COMMENT", "GRANT",
            "REVOKE", "START", "COMMIT", "\\CONNECT", "\\RESTRICT", "DO", "UPDATE", "DELETE", "TRUNCATE",
        } or word.startswith("\\")
    return "-- PostgreSQL database dump" in text


def _is_openpgp(head: bytes) -> bool:
    """An OpenPGP message: armoured, or starting with a (public- or symmetric-key) session key packet."""
    if head.startswith(b"-----BEGIN PGP MESSAGE-----"):
        return True
    first = head[0]
    if not first & 0x80:
        return False
    tag = first & 0x3F if first & 0x40 else (first & 0x3C) >> 2
    return tag in (1, 3)


_HEADERS = (b"-- PostgreSQL database dump", b"-- PostgreSQL database cluster dump")
# What a cron line such as ``pg_dump ... > file 2>&1`` or an editor puts before the dump's own first line: the
# tools' messages, the server's, blank lines. A line of SQL is never noise: the dump then starts before the header.
_NOISE_LINE = re.compile(rb"^(?:\s*|(?:pg_dump|pg_dumpall|pg_restore|psql)(?:\[\d+\])?:.*|"
                         rb"(?:WARNING|NOTICE|DETAIL|HINT|INFO|LOG|ERROR|FATAL):.*)$")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Preamble:
    """What comes before a plain dump's first byte of SQL: a byte-order mark, lines of noise before pg_dump's
    header, Windows line endings. ``skip`` bytes are dropped; ``crlf``: every CR LF is read as LF."""

    skip: int = 0
    lines: int = 0  # lines of noise dropped
    bom: bool = False
    crlf: bool = False
    first: str = ""  # the first line dropped, for the note

    def describe(self) -> str:
        parts = []
        if self.bom:
            parts.append("a byte-order mark")
        if self.lines:
            parts.append(f"{self.lines} line(s) before pg_dump's header (first: {self.first[:100]!r})")
        if self.crlf:
            parts.append("Windows line endings (CR LF read as LF)")
        return ("skipped " + ", ".join(parts)) if parts else ""


NOISE_PEEK = 4 * 1024 * 1024  # how far a header is looked for behind pg_dump's messages


def _starts_with_noise(head: bytes) -> bool:
    first = head.removeprefix(_BOM).lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")
    return bool(first) and _NOISE_LINE.match(first) is not None and not any(h in head for h in _HEADERS)


def preamble_of(head: bytes) -> Preamble:
    """Where the SQL of a plain dump starts, from its first decompressed bytes."""
    bom = head.startswith(_BOM)
    start = len(_BOM) if bom else 0
    eol = head.find(b"\n", start)
    crlf = eol > start and head[eol - 1:eol] == b"\r" or head[start:start + 2] == b"\r\n"
    lines, first = 0, ""
    offsets, pos = [], start
    for line in head[start:].split(b"\n")[:-1]:  # whole lines only
        offsets.append((pos, line.rstrip(b"\r")))
        pos += len(line) + 1
    header = next((i for i, (_, line) in enumerate(offsets) if line.startswith(_HEADERS)), -1)
    if header > 0:
        block = header - 1 if offsets[header - 1][1] == b"--" else header  # pg_dump's "--" line above it
        noise = [line for _, line in offsets[:block]]
        if noise and all(_NOISE_LINE.match(line) for line in noise):
            lines = sum(1 for line in noise if line.strip())
            first = next((line.decode("utf-8", "replace").strip() for line in noise if line.strip()), "")
            start = offsets[block][0]
    return Preamble(skip=start, lines=lines, bom=bom, crlf=crlf, first=first)


class _CleanStream(io.RawIOBase):
    """A plain dump's bytes after its preamble, CR LF read as LF where the file was written that way."""

    def __init__(self, raw: BinaryIO, preamble: Preamble) -> None:
        self.raw = raw
        self.crlf = preamble.crlf
        self.pending = b""
        remaining = preamble.skip
        while remaining:
            got = raw.read(remaining)
            if not got:
                break
            remaining -= len(got)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        block = self.raw.read(size if size and size > 0 else _CHUNK)
        if not self.crlf:
            return block
        block = self.pending + block
        self.pending = b""
        if block.endswith(b"\r") and len(block) > 1:
            block, self.pending = block[:-1], b"\r"
        return block.replace(b"\r\n", b"\n")


_CHUNK = 1 << 20


@contextlib.contextmanager
def open_sql(path: Path, layers: tuple[str, ...]) -> Iterator[tuple[BinaryIO, Preamble]]:
    """Open a plain dump as SQL: compression peeled off, and its preamble (see ``Preamble``) dropped."""
    with open_decompressed(path, layers) as stream:
        head = stream.read(PEEK)
        if _starts_with_noise(head):  # pg_dump -v 2>&1 can write megabytes before the header
            head += stream.read(NOISE_PEEK - len(head))
    preamble = preamble_of(head)
    with open_decompressed(path, layers) as stream:
        yield _CleanStream(stream, preamble), preamble  # type: ignore[misc]


def classify_head(head: bytes) -> tuple[str, str]:
    """Return (format, note) for the first decompressed bytes of a file."""
    if not head:
        return "empty", "the file holds no bytes"
    if not head.startswith((b"PGDMP", b"\x1f\x8b")) and (head.startswith(_BOM) or b"-- PostgreSQL database" in head):
        preamble = preamble_of(head)
        if preamble.skip:
            head = head[preamble.skip:]
    if _is_openpgp(head):
        return "gpg", ""
    if head.startswith(b"PGDMP"):
        return "custom", ""
    if len(head) >= 263 and head[257:262] == b"ustar":
        return ("tar", "") if _tar_is_pg_dump(head) else ("tarball", "")
    if head.startswith((b"# v2 git bundle", b"# v3 git bundle")):
        return "git-bundle", ""
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "json", ""
    text = head.decode("utf-8", errors="replace")
    if "PostgreSQL database cluster dump" in text:
        return "dumpall", ""
    if _looks_like_sql(text):
        if "\nCREATE ROLE " in text and "\\connect " in text:
            return "dumpall", ""
        return "plain", ""
    if b"\x00" in head[:4096]:
        return "unknown", "binary data that is no pg_dump archive, tar, gzip, zstd, lz4, bz2 or xz stream"
    return "unknown", "text that is neither SQL, JSON nor a git bundle"


def _tar_is_pg_dump(head: bytes) -> bool:
    # pg_dump's tar format writes toc.dat as its first member.
    name = head[:100].split(b"\x00", 1)[0]
    return name == b"toc.dat"


def sniff(path: Path) -> tuple[str, tuple[str, ...], str]:
    """Return (format, compression layers, note) for a file or folder."""
    if path.is_dir():
        if (path / "toc.dat").is_file():
            return "directory", (), ""
        return "unknown", (), "a folder without toc.dat"
    try:
        layers, head, error = _peek_layers(path)
    except OSError as exc:
        return "unknown", (), f"cannot be read: {exc.strerror or exc}"
    if error:
        return "unknown", layers, error
    fmt, note = classify_head(head)
    if fmt == "unknown" and _starts_with_noise(head):
        try:
            fmt, note = classify_head(head_bytes(path, layers, NOISE_PEEK))
        except Exception:  # noqa: BLE001 (a stream that breaks later is the integrity read's to report)
            pass
    if fmt == "empty" and layers:
        note = "the compressed stream holds no bytes"
    return fmt, layers, note


def read_all(path: Path, layers: tuple[str, ...], sink: BinaryIO | None = None, chunk: int = 1 << 20) -> int:
    """Read and decompress every byte (checking gzip CRCs and the like); return the byte count."""
    total = 0
    try:
        with open_decompressed(path, layers) as stream:
            while True:
                block = stream.read(chunk)
                if not block:
                    break
                total += len(block)
                if sink is not None:
                    sink.write(block)
    except EOFError as exc:
        raise UnreadableError(f"the compressed stream ends early after {total} bytes ({exc})") from exc
    except (OSError, lzma.LZMAError, ValueError, RuntimeError) as exc:
        raise UnreadableError(f"decompression failed after {total} bytes ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # zstandard/lz4 raise their own error classes
        raise UnreadableError(f"decompression failed after {total} bytes ({type(exc).__name__}: {exc})") from exc
    return total


def read_tar_members(stream: BinaryIO) -> list[str]:
    """Read every member of a tar stream; return their names."""
    names = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                names.append(member.name)
                if member.isfile():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        while handle.read(1 << 20):
                            pass
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnreadableError(f"tar archive unreadable after {len(names)} members ({exc})") from exc
    return names


def tar_holds_dump(path: Path, layers: tuple[str, ...], budget: int = 64 * 1024 * 1024) -> bool | None:
    """Whether a tarball holds a pg_dump (a directory-format ``toc.dat``, a custom archive, plain SQL);
    None when ``budget`` bytes were read without knowing (the unpacking before a restore decides)."""
    try:
        with open_decompressed(path, layers) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if member.offset_data > budget:
                    return None
                name = member.name.rsplit("/", 1)[-1]
                if name.startswith("._") or "__MACOSX" in member.name or not member.isfile():
                    continue
                if name == "toc.dat":
                    return True
                handle = tar.extractfile(member)
                if handle is not None and classify_head(handle.read(PEEK))[0] in ("custom", "plain", "dumpall", "tar"):
                    return True
    except Exception:  # a damaged tarball: its integrity read says what is wrong, and the restore will try
        return None
    return False


def head_bytes(path: Path, layers: tuple[str, ...], size: int = PEEK) -> bytes:
    with open_decompressed(path, layers) as stream:
        return stream.read(size)


def sha_of(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open_bytes(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = [
    "Preamble", "UnreadableError", "classify_head", "compression_of", "head_bytes", "open_decompressed", "open_sql",
    "preamble_of", "read_all",
    "read_tar_members", "sha_of", "sniff",
]
