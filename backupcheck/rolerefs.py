"""Which roles a statement names, read from its tokens (quoted names are names, never keywords).

sqlglot's PostgreSQL tokenizer does the lexing: it knows quoted identifiers,
E'' and dollar-quoted strings, so ``CREATE POLICY "read access to everyone"``
names no role ``everyone``. sqlglot's parser is not used: it turns GRANT on
functions, OWNER TO, CREATE POLICY and ALTER DEFAULT PRIVILEGES into opaque
commands, while the few clauses that name roles are easy to follow in tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

# Role specifications that are not role names (when unquoted).
_NOT_ROLES = frozenset({"public", "current_user", "session_user", "current_role", "none", "default", "all"})
# Words that end a role list.
_LIST_END = frozenset({"with", "granted", "using", "cascade", "restrict", "in", "grant", "revoke", "on", "for"})
# Statements that can name roles; others are not tokenized at all (most of a dump is data and DDL).
_LEADS = ("GRANT", "REVOKE", "CREATE POLICY", "ALTER POLICY", "ALTER DEFAULT PRIVILEGES", "SET ROLE",
          "SET SESSION", "CREATE SCHEMA", "CREATE USER MAPPING", "ALTER")


@dataclass(frozen=True)
class Token:
    kind: str  # word (unquoted, folded to lower case), name (quoted identifier), string, punct
    value: str
    depth: int  # parenthesis depth


def tokens(sql: str) -> list[Token]:
    """The statement's tokens with their parenthesis depth; [] when it cannot be tokenized."""
    from sqlglot import tokenize
    from sqlglot.errors import TokenError
    from sqlglot.tokens import TokenType

    try:
        raw = tokenize(sql, read="postgres")
    except (TokenError, ValueError):
        return []
    strings = {TokenType.STRING, TokenType.HEREDOC_STRING, TokenType.BYTE_STRING, TokenType.NATIONAL_STRING,
               TokenType.RAW_STRING, TokenType.BIT_STRING, TokenType.HEX_STRING}
    out: list[Token] = []
    depth = 0
    for t in raw:
        if t.token_type == TokenType.L_PAREN:
            depth += 1
            out.append(Token("punct", "(", depth))
            continue
        if t.token_type == TokenType.R_PAREN:
            out.append(Token("punct", ")", depth))
            depth = max(0, depth - 1)
            continue
        if t.token_type == TokenType.IDENTIFIER:
            out.append(Token("name", t.text, depth))
        elif t.token_type in strings:
            out.append(Token("string", t.text, depth))
        elif t.text[:1].isalpha() or t.text[:1] == "_":
            out.append(Token("word", t.text.lower(), depth))
        else:
            out.append(Token("punct", t.text, depth))
    return out


def _role_list(toks: list[Token], i: int) -> list[str]:
    """Names of the comma-separated role list starting at ``toks[i]`` (``GROUP`` prefixes allowed)."""
    names = []
    while i < len(toks):
        t = toks[i]
        if t.kind == "word" and t.value == "group":
            i += 1
            continue
        if t.kind == "name":
            names.append(t.value)
        elif t.kind == "word" and t.value not in _LIST_END:
            if t.value not in _NOT_ROLES:
                names.append(t.value)
        else:
            break
        i += 1
        if i < len(toks) and toks[i].value == ",":
            i += 1
            continue
        break
    return names


def _after(toks: list[Token], word: str, start: int = 0) -> int | None:
    """Index after the first top-level (depth 0) ``word`` from ``start``."""
    for i in range(start, len(toks)):
        t = toks[i]
        if t.kind == "word" and t.value == word and t.depth == 0:
            return i + 1
    return None


def _words(toks: list[Token], n: int) -> list[str]:
    return [t.value for t in toks[:n] if t.kind == "word"]


def roles_named(sql: str) -> list[str]:
    """The roles ``sql`` references as owner, grantee, policy target, default-privilege owner or SET ROLE target."""
    head = " ".join(sql.split()[:4]).upper()
    if not head.startswith(_LEADS):
        return []
    if head.startswith("ALTER") and "OWNER" not in sql.upper() and not head.startswith(("ALTER POLICY", "ALTER DEFAULT")):
        return []
    toks = tokens(sql)
    if not toks:
        return []
    lead = _words(toks, 3)
    found: list[str] = []
    # ALTER ... OWNER TO role (any object kind)
    for i in range(len(toks) - 2):
        if toks[i].kind == "word" and toks[i].value == "owner" and toks[i + 1].kind == "word" \
                and toks[i + 1].value == "to" and toks[i].depth == 0:
            found += _role_list(toks, i + 2)[:1]
    if lead[:1] == ["grant"]:
        at = _after(toks, "to")
        on = _after(toks, "on")
        if at is not None and (on is None or on > at):
            found += _role_list(toks, 1)  # GRANT role TO role: the granted roles are named too
        found += _role_list(toks, at) if at is not None else []
    elif lead[:1] == ["revoke"]:
        at = _after(toks, "from")
        found += _role_list(toks, at) if at is not None else []
    elif lead[:2] in (["create", "policy"], ["alter", "policy"]):
        on = _after(toks, "on")
        at = _after(toks, "to", on or 0)
        found += _role_list(toks, at) if at is not None else []
    elif lead[:3] == ["alter", "default", "privileges"]:
        for_at = _after(toks, "for")
        if for_at is not None and for_at < len(toks) and toks[for_at].value in ("role", "user"):
            found += _role_list(toks, for_at + 1)
        verb = next((i for i, t in enumerate(toks) if t.kind == "word" and t.value in ("grant", "revoke")), None)
        if verb is not None:
            at = _after(toks, "to" if toks[verb].value == "grant" else "from", verb)
            found += _role_list(toks, at) if at is not None else []
    elif lead[:2] == ["set", "role"] or lead[:3] == ["set", "session", "role"] \
            or lead[:3] == ["set", "session", "authorization"]:
        n = 2 if lead[1] == "role" else 3
        if n < len(toks):
            t = toks[n]
            if t.kind in ("name", "string") or (t.kind == "word" and t.value not in _NOT_ROLES):
                found.append(t.value)
    elif lead[:2] == ["create", "schema"]:
        at = _after(toks, "authorization")
        found += _role_list(toks, at)[:1] if at is not None else []
    out: list[str] = []
    for name in found:
        if name and name not in out:
            out.append(name)
    return out
