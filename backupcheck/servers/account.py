"""The operating-system account disposable servers run as when backupcheck runs as root."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess


class AccountError(Exception):
    """No account to run servers as: one sentence with the fix."""


SERVER_ACCOUNT = "backupcheck"


def server_user() -> tuple[int, int] | None:
    """initdb refuses root: as root, servers run as a system account of their own (``backupcheck``, created when
    missing), not ``nobody``, whose files every other daemon running as nobody could read."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        proc = subprocess.run([useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                               "--shell", "/usr/sbin/nologin", "--comment", "backupcheck disposable servers",
                               SERVER_ACCOUNT], capture_output=True, text=True)
        try:
            pw = pwd.getpwnam(SERVER_ACCOUNT)
        except KeyError:
            raise AccountError(
                f"running as root, PostgreSQL needs a system account of its own and '{SERVER_ACCOUNT}' could not be "
                f"created ({(proc.stderr or proc.stdout).strip()[:200] or 'useradd failed'}). Fix: create it "
                f"(useradd --system --user-group --shell /usr/sbin/nologin {SERVER_ACCOUNT}), run backupcheck as "
                "a user other than root, or use --pg-provider container") from None
    return pw.pw_uid, pw.pw_gid
