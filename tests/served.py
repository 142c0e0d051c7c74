"""`drbot serve` in a subprocess against the fake GitHub: the App as it is deployed, for end-to-end tests and the
benches that time it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from fakegithub import delivery


ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 2) -> int:
    """The status `url` answers with (an error status included), or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


class Served:
    """One `drbot serve` of the code at `code`, on its own port and key prefix; with `log`, its output goes there,
    and `health` collects /healthz answers polled every 50 ms once started (`watch=True`). `args` picks a role
    (`--web-only`, `--worker-only`); several servers of one role share a queue when given the same
    `DRBOT_KEY_PREFIX`."""

    def __init__(
        self,
        github,
        secret: str,
        *,
        code: Path = ROOT,
        log: Path | None = None,
        redis_url: str = "redis://127.0.0.1:6379/0",
        args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = env.pop("DRBOT_KEY_PREFIX", f"drbot-test-{uuid.uuid4().hex[:8]}:")
        self.secret, self.redis_url = secret, redis_url
        environment = {
            **os.environ,
            "PYTHONPATH": str(code),
            "GITHUB_API_URL": github.url,
            "GITHUB_APP_ID": github.app_id,
            "GITHUB_PRIVATE_KEY": github.private_key_pem,
            "GITHUB_WEBHOOK_SECRET": secret,
            "REDIS_URL": redis_url,
            "DRBOT_KEY_PREFIX": self.prefix,
            "DRBOT_PORT": str(self.port),
            "DRBOT_HOST": "127.0.0.1",
            "DRBOT_WRITE_SPACING": "0",  # GitHub's pacing only adds seconds here
            **env,
        }
        self.log = open(log, "w+") if log is not None else None
        out = self.log if self.log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen([sys.executable, "-m", "drbot", "serve", *args], cwd=code, env=environment,
                                        stdout=out, stderr=out, start_new_session=True)  # fmt: skip
        self.health: list[int] = []
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.health.append(http_status(f"{self.url}/healthz"))
            time.sleep(0.05)

    def start(self, expect: int = 200, watch: bool = False, timeout: float = 60) -> None:
        """Wait until /healthz answers `expect` (503 while Redis is away)."""
        self.wait_for(lambda: http_status(f"{self.url}/healthz") == expect, timeout)
        if watch:
            self._watch.start()

    def deliver(self, event: str, payload: dict) -> int:
        headers, body = delivery(event, payload, self.secret)
        request = urllib.request.Request(f"{self.url}/webhook", data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of the server's /metrics (0 when it has not been set)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0

    def wait_for(self, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"drbot serve died ({self.process.returncode}):\n{self.output()}"
            assert time.monotonic() < deadline, f"gave up waiting:\n{self.output()}"
            time.sleep(0.05)

    def output(self) -> str:
        if self.log is None:
            return "(no log)"
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-6000:]

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its keys."""
        self._stop.set()
        if self._watch.is_alive():
            self._watch.join(timeout=5)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
        import redis

        try:
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2)
            for key in client.scan_iter(match=f"{self.prefix}*"):
                client.delete(key)
            client.close()
        except redis.RedisError:
            pass  # a test's own Redis, already stopped
