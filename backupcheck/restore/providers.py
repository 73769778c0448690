"""Which kind of server restores the backups (local clusters, containers, a given server), and why."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..servers import pgbin
from ..servers.cluster import ClusterFactory
from ..servers.containers import ContainerServer, engine_answers, ensure_image, image_for
from .targets import ContainerTarget, DsnTarget, LocalTarget, Target, describe_dsn

log = logging.getLogger(__name__)

UNKNOWN_MAJOR = 15  # a dump that names no pg_dump version (the Supabase CLI strips the header): Supabase's default


class ProviderError(Exception):
    """The chosen provider cannot work here; the message says how to fix it."""


@dataclass(frozen=True)
class Decision:
    kind: str  # local, container or dsn
    reason: str


def decide(choice: str, image_template: str, dsn: str, majors: set[int]) -> Decision:
    """Resolve ``auto`` once per run; the reason goes to the report header."""
    if choice == "local":
        return Decision("local", "pg_provider = local was asked for")
    if choice == "dsn":
        return Decision("dsn", f"pg_provider = dsn was asked for: {describe_dsn(parse_dsn(dsn))}")
    answers, what = engine_answers()
    if choice == "container":
        if not answers:
            raise ProviderError(f"--pg-provider container: {what}. Start Docker (or set DOCKER_HOST), "
                                "or use --pg-provider local")
        return Decision("container", f"pg_provider = container was asked for; {what}")
    if not answers:
        return Decision("local", f"auto: {what}; restoring in local clusters")
    for major in sorted(majors or {UNKNOWN_MAJOR}):
        problem = ensure_image(image_for(image_template, major))
        if problem:
            return Decision("local", f"auto: {what}, but {problem}; restoring in local clusters")
    images = ", ".join(image_for(image_template, m) for m in sorted(majors or {UNKNOWN_MAJOR}))
    return Decision("container", f"auto: {what}, with {images}")


def parse_dsn(dsn: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:
        # The message may quote the DSN, password and all: say only what kind of problem it is.
        raise ProviderError(f"--pg-dsn is not a valid connection string ({type(exc).__name__}); expected "
                            "'host=... port=... user=... dbname=postgres' or postgresql://user@host:port/postgres") from None
    params.setdefault("connect_timeout", 10)
    return params


class Provider:
    kind = ""

    def target(self, need_major: int | None, need_bytes: int, why: str,
               extensions: frozenset[str] = frozenset()) -> Target:
        """A server for a dump that needs ``need_major`` or newer; one that ships ``extensions`` where there is a
        choice."""
        raise NotImplementedError

    def release(self, target: Target) -> None:
        """Called after a target's exit."""

    def close(self) -> None:
        pass


class LocalProvider(Provider):
    kind = "local"

    def __init__(self, factory: ClusterFactory, tools: pgbin.Tools = pgbin.ANY_TOOLS) -> None:
        self.factory = factory
        self.tools = tools
        self.idle: dict[Path, LocalTarget] = {}  # a server put back as it was found, per installation

    def target(self, need_major: int | None, need_bytes: int, why: str,
               extensions: frozenset[str] = frozenset()) -> Target:
        """The server the last backup of this process used, reset, when it fits this one; else a new one
        (a fleet of small databases would pay 0.15 s a server otherwise)."""
        inst = self.tools.pick(need_major, why=why, extensions=extensions)
        last = self.idle.pop(inst.bindir, None)
        if last is not None:
            if last.cluster.process is not None and last.cluster.home.parent == self.factory.place(need_bytes):
                return LocalTarget(last.cluster, last.before).follow(last)
            last.close_admin()
            last.cluster.__exit__(None, None, None)
        return LocalTarget(self.factory.started(inst, need_bytes))

    def release(self, target: Target) -> None:
        if isinstance(target, LocalTarget) and target.reusable:
            old = self.idle.pop(target.installation.bindir, None)
            if old is not None and old.cluster is not target.cluster:
                old.close_admin()
                old.cluster.__exit__(None, None, None)
            self.idle[target.installation.bindir] = target

    def close(self) -> None:
        idle, self.idle = list(self.idle.values()), {}
        for target in idle:
            target.close_admin()
            target.cluster.__exit__(None, None, None)


class ContainerProvider(Provider):
    """One container per server version, per process, reused for every backup of that version."""

    kind = "container"

    def __init__(self, image_template: str, run: str, ryuk: bool) -> None:
        self.image_template = image_template
        self.run = run
        self.ryuk = ryuk
        self.servers: dict[str, ContainerServer] = {}

    def target(self, need_major: int | None, need_bytes: int, why: str,
               extensions: frozenset[str] = frozenset()) -> Target:
        image = image_for(self.image_template, need_major or UNKNOWN_MAJOR)
        server = self.servers.get(image)
        if server is None:
            server = ContainerServer(image, self.run, self.ryuk).__enter__()
            self.servers[image] = server
        return ContainerTarget(server)

    def release(self, target: Target) -> None:
        if isinstance(target, ContainerTarget) and target.dirty:
            server = self.servers.pop(target.server.image, None)
            if server is not None:
                server.__exit__(None, None, None)

    def close(self) -> None:
        servers, self.servers = list(self.servers.values()), {}
        for server in servers:
            server.__exit__(None, None, None)


class DsnProvider(Provider):
    """A server the user runs; pg_restore comes from this machine."""

    kind = "dsn"

    def __init__(self, dsn: str, tools: pgbin.Tools = pgbin.ANY_TOOLS) -> None:
        self.params = parse_dsn(dsn)
        self.tools = tools

    def target(self, need_major: int | None, need_bytes: int, why: str,
               extensions: frozenset[str] = frozenset()) -> Target:
        inst = self.tools.pick(need_major, why=why)
        return DsnTarget(self.params, inst)
