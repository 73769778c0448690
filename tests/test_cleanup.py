"""Nothing outlives a run: not after it ends, not after Ctrl-C, not after SIGKILL (the next run sweeps)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, SUITES


def postgres_under(folder: Path) -> list[int]:
    """Pids of PostgreSQL processes whose command line names ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and b"postgres" in cmdline and str(folder).encode() in cmdline:
            found.append(int(entry.name))
    return found


def wait_for(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def suite_command(backups: Path, work: Path, reports: Path, cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", str(SUITES), "--backups", str(backups), "--backup-config", str(cfg),
            "--work-dir", str(work), "--reports-dir", str(reports), "-q", *extra]


@pytest.fixture
def empty_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "backupcheck.toml"
    cfg.write_text("")
    return cfg


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_after_sigkill_no_server_survives_and_the_next_run_sweeps_the_rest(clean_dir, work_dir, tmp_path, empty_config, workers):
    cmd = suite_command(clean_dir, work_dir, tmp_path / "r1", empty_config, "--restore", "all", *workers)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: postgres_under(work_dir), 120), "no restore started"
        if workers:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole run dies at once, as with a lost machine
        else:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert wait_for(lambda: not postgres_under(work_dir), 30), "a server outlived the run that started it"
    assert list(work_dir.glob("backupcheck-run-*")), "the killed run left its folder (to be swept)"

    subprocess.run(suite_command(clean_dir / "custom", work_dir, tmp_path / "r2", empty_config, "-k", "size"),
                   cwd=REPO, capture_output=True, timeout=300, check=False)
    assert list(work_dir.iterdir()) == []


def test_ctrl_c_stops_the_run_and_removes_everything(clean_dir, work_dir, tmp_path, empty_config):
    cmd = suite_command(clean_dir, work_dir, tmp_path / "r", empty_config, "--restore", "all")
    # Ctrl-C as a terminal delivers it: to a run whose SIGINT is not ignored (a command a non-interactive shell
    # starts in the background inherits it ignored, and so would the run)
    inherited = signal.getsignal(signal.SIGINT)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert wait_for(lambda: postgres_under(work_dir), 120), "no restore started"
        sent = time.monotonic() - t0
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.decode(errors="replace")
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, (
        f"SIGINT sent {sent:.2f} s after the start, the run ended after {time.monotonic() - t0:.2f} s "
        f"(this process's SIGINT: {inherited}):\n{text[:3000]}\n[...]\n{text[-3000:]}")
    assert not postgres_under(work_dir)
    assert list(work_dir.iterdir()) == []


def test_a_normal_run_leaves_nothing(run_suites, clean_dir, work_dir):
    run = run_suites("--backups", str(clean_dir / "custom"), work=work_dir)
    assert run.ret == 0
    assert list(work_dir.iterdir()) == []
    assert not postgres_under(work_dir)
