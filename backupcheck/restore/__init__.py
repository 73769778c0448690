"""Restoring a backup: what may run and how errors are judged, the servers it goes into, the restored database.

errors      what a restore may do; every error it raised, judged (benign, notice, harmful, security) and advised
archive     what pg_restore is asked to do: arguments, passes over an archive's TOC, the owners it names
plain       a plain SQL dump run statement by statement (meta-commands never run, rewrites said)
profiles    what a producer's dumps expect of a server (Supabase's roles and extensions, vanilla)
compat      that expectation against a server: mismatches and their fixes, before the restore
targets     a server to restore into (local cluster, container, a given DSN) and how each runs the tools
providers   which target a backup gets, by major version and what is installed
database    the restored database handle (RestoredBackup): connections, counts, orphans, the restore cache
progress    what a running restore is doing (phase, bytes, time left), said while it runs

A physical recovery (a base backup and its WAL) joins as one more module beside ``plain`` and ``archive``.
"""
