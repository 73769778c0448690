"""The benchmark at size, in a small version: it runs end to end and prints every figure it promises (no time is
judged here: speed is measured by hand, see bench/README.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_large_benchmark_runs_small(tmp_path):
    env = {**os.environ, "BACKUPCHECK_BENCH_DATA": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "large.py"), "--size", "30mb"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for name in ("custom", "plain"):
        assert re.search(rf"^{name}: bare backupcheck \(0: \d+ passed", out, re.M), out[-3000:]
        row = re.search(rf"^{name}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+%\s+([\d.,]+) MB\s+"
                        r"([\d.,]+) MB$", out, re.M)
        assert row, out[-3000:]
        assert float(row.group(4).replace(",", "")) > 20, "the RSS of backupcheck's own processes is measured"
        # The file system's use beyond the start: a test beside it (-n 2) may free more than 30 MB meanwhile
        assert float(row.group(5).replace(",", "")) >= 0, "the disk the restore used is measured"
        assert re.search(rf"^  {name}\s+whole / bare\s+[\d.]+\s+target <= 1.08: (MET|NOT MET)$", out, re.M)
    assert not list(Path(tmp_path).glob("backupcheck-run-*")), "nothing left behind"


def test_the_physical_benchmark_runs_small(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "physical.py"), "--size", "30mb", "--wal-seconds", "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r"^  backupcheck recovery [\d.]+ s \(errors: no errors\); phases: .*WAL replay and promotion "
                     r"[\d.]+ s$", out, re.M), out
    assert re.search(r"^bare recovery [\d.]+ s; backupcheck recovery [\d.]+ s \(medians of 1\)$", out, re.M), out
    assert re.search(r"^whole / bare [\d.]+$", out, re.M), out
