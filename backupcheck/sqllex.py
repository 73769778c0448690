"""A streaming lexer for plain SQL dumps: statements, psql meta-commands and COPY data.

It follows psql's own rules for where a statement ends and where a backslash
command starts (outside quotes, anywhere on a line), so a meta-command that
psql would have run is one this lexer reports. COPY data is passed through in
large blocks and its rows counted at C speed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

_CHUNK = 1 << 20


@dataclass
class Statement:
    text: bytes
    line: int


@dataclass
class MetaCommand:
    name: str  # without the backslash: "connect", "!", "o"
    args: str
    line: int
    inside_statement: bool


@dataclass
class CopyIn:
    """A ``COPY ... FROM stdin`` statement; ``data`` yields its rows' bytes and must be read."""

    statement: Statement
    data: Iterator[bytes]
    rows: int = 0
    terminated: bool = False


@dataclass
class Unterminated:
    """The input ended inside a statement, a quote, a comment or a COPY block."""

    what: str
    line: int


@dataclass
class Comment:
    text: str
    line: int


Event = Statement | MetaCommand | CopyIn | Unterminated | Comment

_NORMAL, _SQ, _ESQ, _DQ, _DOLLAR, _COMMENT = range(6)
_SPECIAL = re.compile(rb"""['"$;\\()]|--|/\*|[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*""")
_DOLLAR_TAG = re.compile(rb"\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_META = re.compile(rb"\\([A-Za-z]+|[!?.;]|\S?)")
_COPY_STDIN = re.compile(
    rb"^\s*COPY\s+.+?\bFROM\s+stdin\b", re.IGNORECASE | re.DOTALL
)
_SCS = re.compile(rb"^\s*SET\s+standard_conforming_strings\s*(?:=|TO)\s*'?(on|off)'?", re.IGNORECASE)


def _ident_char(c: int) -> bool:
    return c == 0x5F or c == 0x24 or 0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c >= 0x80


class _Input:
    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.line = 0

    def _fill(self) -> bool:
        if self.eof:
            return False
        block = self.stream.read(_CHUNK)
        if not block:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + block
        self.pos = 0
        return True

    def readline(self) -> bytes:
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                out = self.buf[self.pos : i + 1]
                self.pos = i + 1
                self.line += 1
                return out
            if not self._fill():
                out = self.buf[self.pos :]
                self.pos = len(self.buf)
                if out:
                    self.line += 1
                return out

    def copy_rows(self, section: CopyIn) -> Iterator[bytes]:
        """Yield COPY data up to the ``\\.`` line; count rows and lines on the way."""
        while True:
            if self.pos >= len(self.buf) and not self._fill():
                return  # ended without a terminator
            # At a line start: is this the terminator?
            if self.buf.startswith(b"\\.", self.pos):
                if len(self.buf) - self.pos < 4 and not self.eof:
                    if self._fill():
                        continue
                rest = self.buf[self.pos + 2 : self.pos + 4]
                if rest[:1] in (b"\n", b"") or rest == b"\r\n":
                    self.readline()
                    section.terminated = True
                    return
            j = self.buf.find(b"\n\\.", self.pos)
            if j < 0:
                k = self.buf.rfind(b"\n", self.pos)
                if k < 0:
                    if not self._fill():
                        tail = self.buf[self.pos :]
                        self.pos = len(self.buf)
                        section.rows += 1
                        self.line += 1
                        yield tail
                        return
                    continue
                j = k
            chunk = self.buf[self.pos : j + 1]
            n = chunk.count(b"\n")
            section.rows += n
            self.line += n
            self.pos = j + 1
            yield chunk


@dataclass
class _State:
    mode: int = _NORMAL
    dollar_tag: bytes = b""
    comment_depth: int = 0
    paren_depth: int = 0
    begin_depth: int = 0
    words: list[bytes] = field(default_factory=list)
    backslash_quotes: bool = False  # standard_conforming_strings = off


def _past_quote(line: bytes, i: int, quote: bytes) -> tuple[int, bool]:
    """Inside a quoted string or identifier: where scanning goes on, and whether the quote closed.

    A doubled quote is the quote character itself, not the end.
    """
    j = line.find(quote, i)
    if j < 0:
        return len(line), False
    if line[j + 1 : j + 2] == quote:
        return j + 2, False
    return j + 1, True


def _is_routine(words: list[bytes]) -> bool:
    w = [x.lower() for x in words[:4]]
    if len(w) >= 2 and w[0] == b"create" and w[1] in (b"function", b"procedure"):
        return True
    return len(w) >= 4 and w[:3] == [b"create", b"or", b"replace"] and w[3] in (b"function", b"procedure")


def events(stream: BinaryIO) -> Iterator[Event]:
    """Split a plain SQL dump into events, in file order."""
    src = _Input(stream)
    st = _State()
    stmt = bytearray()
    stmt_line = 0
    while True:
        line = src.readline()
        if not line:
            break
        if not stmt and st.mode == _NORMAL and line.lstrip().startswith(b"--"):
            yield Comment(line.decode("utf-8", "replace").strip(), src.line)
            continue
        i = 0
        n = len(line)
        start = 0  # where the current statement's part of this line begins
        while i < n:
            if st.mode == _NORMAL:
                m = _SPECIAL.search(line, i)
                if m is None:
                    break
                tok = m.group()
                i = m.end()
                c = tok[0]
                if c == 0x27:  # '
                    p = m.start()
                    escaped = p > 0 and line[p - 1] in b"Ee" and (p < 2 or not _ident_char(line[p - 2]))
                    st.mode = _ESQ if (escaped or st.backslash_quotes) else _SQ
                elif c == 0x22:  # "
                    st.mode = _DQ
                elif c == 0x24:  # $
                    p = m.start()
                    if p > 0 and _ident_char(line[p - 1]):
                        continue
                    d = _DOLLAR_TAG.match(line, p)
                    if d:
                        st.mode = _DOLLAR
                        st.dollar_tag = d.group()
                        i = d.end()
                elif c == 0x3B:  # ;
                    if st.paren_depth == 0 and st.begin_depth == 0:
                        if not stmt:
                            stmt_line = src.line
                        stmt += line[start:i]
                        text = bytes(stmt)
                        stmt.clear()
                        st.words.clear()
                        s = Statement(text, stmt_line)
                        scs = _SCS.match(text)
                        if scs:
                            st.backslash_quotes = scs.group(1).lower() == b"off"
                        if _COPY_STDIN.match(text):
                            rest = line[i:].strip()
                            if rest:
                                yield MetaCommand("text-after-copy", rest.decode("utf-8", "replace"), src.line, True)
                            section = CopyIn(s, iter(()))
                            section.data = src.copy_rows(section)
                            yield section
                            for _ in section.data:  # drain what the consumer left
                                pass
                            if not section.terminated:
                                yield Unterminated("COPY data without its \\. terminator", src.line)
                            i = n
                            start = n
                            break
                        yield s
                        start = i
                elif c == 0x28:
                    st.paren_depth += 1
                elif c == 0x29:
                    st.paren_depth = max(0, st.paren_depth - 1)
                elif tok == b"--":
                    i = n
                    break
                elif tok == b"/*":
                    st.mode = _COMMENT
                    st.comment_depth = 1
                elif c == 0x5C:  # backslash: a psql meta-command
                    p = m.start()
                    mm = _META.match(line, p)
                    name = mm.group(1).decode("utf-8", "replace") if mm else ""
                    args = line[mm.end() if mm else p + 1 :].decode("utf-8", "replace").strip()
                    before = stmt + line[start:p]
                    yield MetaCommand(name, args, src.line, bool(before.strip()))
                    # psql hands the rest of the line to the command as its arguments
                    line = line[:p] + b"\n"
                    n = len(line)
                    i = n
                    break
                else:  # a word
                    if len(st.words) < 4:
                        st.words.append(tok)
                    if st.paren_depth == 0 and _is_routine(st.words):
                        low = tok.lower()
                        if low == b"begin":
                            st.begin_depth += 1
                        elif low == b"case" and st.begin_depth >= 1:
                            st.begin_depth += 1
                        elif low == b"end" and st.begin_depth > 0:
                            st.begin_depth -= 1
            elif st.mode in (_SQ, _DQ):
                i, closed = _past_quote(line, i, b"'" if st.mode == _SQ else b'"')
                if closed:
                    st.mode = _NORMAL
            elif st.mode == _ESQ:
                j = line.find(b"'", i)
                k = line.find(b"\\", i)
                if 0 <= k < j or (j < 0 and k >= 0):
                    i = k + 2  # a backslash escapes the next byte, a quote included
                else:
                    i, closed = _past_quote(line, i, b"'")
                    if closed:
                        st.mode = _NORMAL
            elif st.mode == _DOLLAR:
                j = line.find(st.dollar_tag, i)
                if j < 0:
                    i = n
                else:
                    i = j + len(st.dollar_tag)
                    st.mode = _NORMAL
            else:  # block comment, nested as in PostgreSQL
                j = line.find(b"*/", i)
                k = line.find(b"/*", i)
                if 0 <= k < j or (j < 0 and k >= 0):
                    st.comment_depth += 1
                    i = k + 2
                elif j < 0:
                    i = n
                else:
                    st.comment_depth -= 1
                    i = j + 2
                    if st.comment_depth == 0:
                        st.mode = _NORMAL
        rest = line[start:]
        if rest.strip() or stmt:
            if not stmt:
                stmt_line = src.line
            stmt += rest
    if st.mode != _NORMAL:
        what = {_SQ: "a quoted string", _ESQ: "a quoted string", _DQ: "a quoted identifier",
                _DOLLAR: "a dollar-quoted body", _COMMENT: "a comment"}[st.mode]
        yield Unterminated(f"the file ends inside {what}", src.line)
    elif stmt.strip():
        yield Unterminated("the file ends in the middle of a statement (no closing semicolon)", stmt_line)
