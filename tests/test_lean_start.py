"""A run loads what its backups and settings need, nothing more: every module a process imports is compiled or
read from disk before the first restore can start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, SUITES

# Only runs with an s3:// source, a gate, or containers need these.
NOT_NEEDED = ("boto3", "botocore", "backupcheck.sources.s3", "backupcheck.rehearsal", "backupcheck.lint",
              "backupcheck.migrations", "sqlglot", "testcontainers")


def test_a_run_over_local_folders_without_a_gate_imports_neither_s3_nor_the_gate(clean_dir, tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "modules_probe.py").write_text(
        "import sys, os\n"
        "def pytest_unconfigure(config):\n"
        "    open(os.environ['MODULES_OUT'], 'w').write('\\n'.join(sorted(sys.modules)))\n")
    cfg = tmp_path / "backupcheck.toml"
    cfg.write_text("")
    out = tmp_path / "modules.txt"
    env = {**os.environ, "PYTHONPATH": str(probe), "MODULES_OUT": str(out)}
    proc = subprocess.run([sys.executable, "-m", "pytest", str(SUITES), "--backups", str(clean_dir),
                           "--backup-config", str(cfg), "--reports-dir", str(tmp_path / "reports"), "--co", "-q",
                           "-p", "modules_probe", "-p", "no:xdist"], cwd=REPO, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded = set(Path(out).read_text().split())
    assert "backupcheck.restore.database" in loaded, "the probe did not see the plugin load"
    unwanted = sorted(m for m in loaded if m.split(".")[0] in NOT_NEEDED or m in NOT_NEEDED)
    assert not unwanted, f"a local run without a gate imported {unwanted}"
