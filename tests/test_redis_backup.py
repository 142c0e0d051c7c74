"""The runbook's Redis backup and restore (docs/operations.md), step by step against real redis-servers on spare ports
with the deployment's settings: append-only file on, no snapshots, the ACL file `drbot redis-acl` writes.

Backup: `redis-cli --user admin --rdb` (the `drbot` user may not take one). Restore: the snapshot as `dump.rdb`, the
append-only files removed, Redis started once with AOF off, `CONFIG SET appendonly yes`, then a normal start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from served import free_port

from bot.acl import run as write_acl


pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


class Server:
    """redis-server as the compose file runs it (overridable, as the restore's one-off run does)."""

    def __init__(self, data: Path, acl_file: Path, *extra: str) -> None:
        self.port = free_port()
        self.command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data),
                        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--aclfile", str(acl_file),
                        *extra]  # fmt: skip
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, user: str, password: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "REDISCLI_AUTH": password}
        command = ["redis-cli", "-p", str(self.port), "--user", user, *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=check, timeout=60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def deployment(tmp_path):
    """The ACL file and passwords of `drbot redis-acl --runner runner-1`, and the servers a test starts."""
    args = argparse.Namespace(prefix="drbot:", bot_user="drbot", runner=["runner-1"], acl_file=tmp_path / "users.acl",
                              secrets=tmp_path / "secrets")  # fmt: skip
    assert write_acl(args) == 0
    passwords = {p.stem: p.read_text().strip() for p in args.secrets.glob("*.password")}
    servers: list[Server] = []

    def start(data: Path, *extra: str) -> Server:
        data.mkdir(exist_ok=True)
        servers.append(Server(data, args.acl_file, *extra))
        return servers[-1]

    yield start, passwords
    for server in servers:
        server.stop()


def test_backup_then_restore_onto_an_empty_volume_keeps_the_data_and_its_persistence(deployment, tmp_path):
    start, passwords = deployment
    bot, admin = ("drbot", passwords["drbot"]), ("admin", passwords["admin"])
    live = start(tmp_path / "live")
    live.cli(*bot, "SET", "drbot:known:huggingface/diffusers", "registry")
    live.cli(*bot, "XADD", "drbot:events", "*", "delivery", "d1", "event", "pull_request")
    live.cli(*bot, "HSET", "drbot:pr:huggingface/diffusers:1", "summary_comment", "42")
    # the bot's own user may not take a backup: it is an administrative command
    denied = live.cli(*bot, "--rdb", str(tmp_path / "nope.rdb"), check=False)
    assert denied.returncode != 0 and not (tmp_path / "nope.rdb").exists()
    backup = tmp_path / "backups" / "drbot.rdb"
    backup.parent.mkdir()
    live.cli(*admin, "--rdb", str(backup))
    assert backup.stat().st_size > 0
    live.stop()

    # a lost volume: only the snapshot is left. Started as usual (AOF on), Redis would come up empty
    naive = tmp_path / "naive"
    naive.mkdir()
    shutil.copy(backup, naive / "dump.rdb")
    empty = start(naive)
    assert empty.cli(*admin, "DBSIZE").stdout.strip() == "0"
    empty.stop()

    # the runbook: the snapshot in place, the append-only files out of the way, a one-off start with AOF off
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(backup, restored / "dump.rdb")
    once = start(restored, "--appendonly", "no")
    once.cli(*admin, "CONFIG", "SET", "appendonly", "yes")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = once.cli(*admin, "INFO", "persistence").stdout
        if "aof_rewrite_in_progress:0" in info and "aof_rewrite_scheduled:0" in info and "aof_enabled:1" in info:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the append-only rewrite did not finish")
    once.cli(*admin, "SHUTDOWN")
    once.proc.wait(timeout=30)

    back = start(restored)  # the compose file's own command again
    assert back.cli(*bot, "GET", "drbot:known:huggingface/diffusers").stdout.strip() == "registry"
    assert back.cli(*bot, "XLEN", "drbot:events").stdout.strip() == "1"
    assert back.cli(*bot, "HGET", "drbot:pr:huggingface/diffusers:1", "summary_comment").stdout.strip() == "42"
    # and it persists from now on: a write after the restore survives a kill
    back.cli(*bot, "SET", "drbot:after", "1")
    time.sleep(1.2)  # appendfsync everysec
    back.proc.kill()
    back.proc.wait()
    again = start(restored)
    assert again.cli(*bot, "GET", "drbot:after").stdout.strip() == "1"
