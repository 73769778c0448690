"""Decrypt gpg-encrypted artifacts (``gpg --symmetric`` or to a key in the user's keyring)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


class DecryptError(Exception):
    """The artifact could not be decrypted: wrong passphrase, missing key, damaged data or no gpg."""


def decrypt(source: Path, target: Path, passphrase: str | None) -> None:
    """Write the plaintext of ``source`` to ``target``; the passphrase goes through a pipe, never argv."""
    gpg = shutil.which("gpg")
    if gpg is None:
        raise DecryptError("gpg is not installed (apt-get install gnupg)")
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [gpg, "--batch", "--yes", "--quiet", "--no-tty", "--no-permission-warning"]
    with tempfile.TemporaryDirectory(dir=target.parent) as home:
        env = dict(os.environ)
        if passphrase is not None:
            # A private, empty keyring: a symmetric passphrase needs none, and nothing of the user's is touched.
            os.chmod(home, 0o700)
            env["GNUPGHOME"] = home
            cmd += ["--pinentry-mode", "loopback", "--passphrase-fd", "0"]
        cmd += ["--decrypt", "--output", str(target), str(source)]
        try:
            proc = subprocess.run(cmd, input=(passphrase or "").encode(), capture_output=True, env=env, timeout=3600)
        finally:
            if passphrase is not None:
                stop_agent(home)
    if proc.returncode != 0:
        target.unlink(missing_ok=True)
        lines = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        reason = lines[-1].removeprefix("gpg: ") if lines else f"exit code {proc.returncode}"
        raise DecryptError(f"gpg could not decrypt it: {reason}")


def stop_agent(home: str | Path) -> None:
    """Stop the gpg-agent gpg started for a keyring of ours: no process outlives the run (it would otherwise
    linger until it noticed its folder was gone)."""
    gpgconf = shutil.which("gpgconf")
    if gpgconf is not None:
        subprocess.run([gpgconf, "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, timeout=30,
                       check=False)
