"""deploy/ holds together: the compose file's services, restart policies, persistence and Redis users, the images'
Dockerfiles, the TLS proxy, and alert rules on metrics drbot really exports.

No Docker engine runs here: the compose file is parsed as YAML (what `docker compose config` would read) and checked
against what `drbot redis-acl` writes; the Dockerfiles are read as instructions.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest
import yaml

from bot.acl import run as write_acl
from bot.metrics import Metrics


ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
#: series Prometheus makes itself, and labels it adds to every scraped series
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"job", "instance"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _redis_user(url: str) -> str:
    match = re.fullmatch(r"redis://([^:@/]+):\$\{(\w+)\}@redis:6379/0", url)
    assert match, f"REDIS_URL {url!r} does not name a user and a password variable"
    return match[1]


def test_every_service_restarts_and_the_expected_ones_exist(compose):
    services = compose["services"]
    assert {"redis", "web", "worker", "runner", "proxy"} <= services.keys()
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "always"), f"{name} has no restart policy"
    assert services["web"]["command"] == ["drbot", "serve", "--web-only"]
    assert services["worker"]["command"] == ["drbot", "serve", "--worker-only"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["runner"]["command"][:2] == ["drbot", "worker"]
    assert services["runner"]["profiles"] == ["runner"] and services["proxy"]["profiles"] == ["tls"]
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file(), name


def test_redis_persists_and_loads_the_acl_file(compose):
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] in ("everysec", "always")
    acl_path = command[command.index("--aclfile") + 1]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in redis["volumes"]}
    assert mounts["/data"] in compose["volumes"], "Redis data must live on a named volume"
    assert acl_path in mounts and mounts[acl_path] == "./redis/users.acl"


def test_each_component_reaches_redis_as_its_own_acl_user(compose, tmp_path):
    # the header's one-time command, run as written: the users it makes are the users the services log in as
    (header,) = [line for line in COMPOSE.read_text().splitlines() if "drbot redis-acl" in line]
    argv = shlex.split(header.lstrip("# "))[2:]
    parser = argparse.ArgumentParser()
    parser.add_argument("--runner", action="append", default=[])
    parser.add_argument("--acl-file", type=Path)
    parser.add_argument("--secrets", type=Path)
    args = parser.parse_args(argv)
    assert args.acl_file == Path("redis/users.acl")
    args.acl_file, args.secrets = tmp_path / "users.acl", tmp_path / "secrets"
    assert write_acl(argparse.Namespace(prefix="drbot:", bot_user="drbot", **vars(args))) == 0
    lines = args.acl_file.read_text().splitlines()
    users = {line.split()[1]: line for line in lines}
    assert users["default"] == "user default off"

    services = compose["services"]
    used = {name: _redis_user(s["environment"]["REDIS_URL"]) for name, s in services.items() if "environment" in s
            and "REDIS_URL" in s["environment"]}  # fmt: skip
    assert used == {"web": "drbot", "worker": "drbot", "runner": "runner-1"}
    for name, user in used.items():
        assert user in users, f"{name} logs in as {user!r}, which `drbot redis-acl` does not create"
    # the runner's user is a runner's: it may add to the results stream and never to the events stream
    assert "(~drbot:results +xadd)" in users["runner-1"] and "~drbot:events" not in users["runner-1"]
    assert "admin" not in used.values() and "default" not in used.values()
    header_vars = set(re.findall(r"(\w+_REDIS_PASSWORD)=\$\(cat secrets/([\w-]+)\.password\)", COMPOSE.read_text()))
    for name, service in services.items():
        if "REDIS_URL" in service.get("environment", {}):
            variable = re.search(r"\$\{(\w+)\}", service["environment"]["REDIS_URL"])[1]
            assert (variable, used[name]) in header_vars, (
                f"{name}: the header does not say where {variable} comes from"
            )


def test_only_the_proxy_is_public_and_it_forwards_only_the_webhook_and_health(compose):
    services = compose["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert name == "proxy" or str(port).startswith("127.0.0.1:"), f"{name} publishes {port} publicly"
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in services["proxy"]["volumes"]
    live = "\n".join(line for line in caddyfile.splitlines() if not line.lstrip().startswith("#"))
    assert re.findall(r"handle (\S+) \{\s*reverse_proxy (\S+)", live) == [
        ("/webhook", "web:8080"),
        ("/healthz", "web:8080"),
    ]
    assert "/metrics" not in live and "respond 404" in live


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("dockerfile", ["Dockerfile.bot", "Dockerfile.runner"])
def test_the_images_copy_what_exists_and_install_the_package(dockerfile):
    steps = _instructions(DEPLOY / dockerfile)
    assert steps[0][0] in ("FROM", "ARG")
    for kind, rest in steps:
        if kind == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which does not exist"
    packages = {"Dockerfile.bot": "'.[bot]'", "Dockerfile.runner": "'.[runner]'"}[dockerfile]
    assert any(kind == "RUN" and f"pip install --no-cache-dir {packages}" in rest for kind, rest in steps)


def test_the_runner_image_has_the_sandbox_tools_and_the_pinned_cuda_torch():
    steps = _instructions(DEPLOY / "Dockerfile.runner")
    runs = " ".join(rest for kind, rest in steps if kind == "RUN")
    # bwrap makes the job's namespaces; setpriv and prlimit (util-linux) drop privileges and set limits
    assert re.search(r"apt-get install .*\bbubblewrap\b.*\butil-linux\b", runs)
    args = dict(rest.split("=", 1) for kind, rest in steps if kind == "ARG")
    assert args["TORCH_VARIANT"].startswith("cu"), "the runner image is the CUDA build by default"
    pin = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text())[1]
    assert args["TORCH_VERSION"] == pin, "the image's torch must be the version the [runner] extra pins"
    assert 'download.pytorch.org/whl/${TORCH_VARIANT}" "torch==${TORCH_VERSION}"' in runs
    envs = " ".join(rest for kind, rest in steps if kind == "ENV")
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in envs
    assert not any(kind == "USER" for kind, _ in steps), "the runner must be root in its container to sandbox jobs"
    assert steps[-1] == ("CMD", '["drbot", "worker", "--device", "cuda"]')


def exported_metrics() -> dict[str, set[str]]:
    """Every series name drbot's /metrics can show, with its label names (each labelled metric given one child)."""
    metrics = Metrics()
    for collector in list(metrics.registry._collector_to_names):
        labels = getattr(collector, "_labelnames", ())
        if labels:
            collector.labels(*(["x"] * len(labels)))
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def alert_problems(rules: list[dict], exported: dict[str, set[str]], runbook: str) -> list[str]:
    """What is wrong with alert rules: a series drbot does not export, a label its metric does not have, a rule the
    runbook has no section for."""
    problems = []
    for rule in rules:
        alert, expr = rule["alert"], rule["expr"]
        series = set(re.findall(r"\b(drbot_[a-z0-9_]+|up)\b", expr))
        if not series:
            problems.append(f"{alert}: names no drbot metric")
        problems += [f"{alert}: {name} is not exported" for name in series - exported.keys() - PROMETHEUS_SERIES]
        for name, matchers in re.findall(r"\b(drbot_[a-z0-9_]+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                if label not in exported.get(name, set()) | TARGET_LABELS:
                    problems.append(f"{alert}: {name} has no label {label}")
        known = set().union(*(exported.get(n, set()) for n in series)) | TARGET_LABELS | {"le"}
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            problems += [
                f"{alert}: no label {p.strip()} to group by" for p in grouping.split(",") if p.strip() not in known
            ]
        anchor = rule.get("annotations", {}).get("runbook", "").partition("#")[2]
        if anchor != alert.lower() or f"\n### {alert}\n" not in runbook:
            problems.append(
                f"{alert}: no runbook section `### {alert}` in docs/operations.md linked as #{alert.lower()}"
            )
    return problems


def test_every_alert_uses_metrics_and_labels_drbot_exports():
    exported = exported_metrics()
    assert "drbot_webhook_deliveries_total" in exported and "drbot_event_processing_seconds_bucket" in exported
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    assert len(rules) >= 8
    assert alert_problems(rules, exported, (ROOT / "docs" / "operations.md").read_text()) == []


def test_the_alert_check_catches_a_misspelt_metric_or_label():
    exported = exported_metrics()
    runbook = "\n### Typo\n"
    rule = {"alert": "Typo", "annotations": {"runbook": "docs/operations.md#typo"}}
    assert alert_problems([{**rule, "expr": "drbot_queue_depth > 1"}], exported, runbook) == []
    assert alert_problems([{**rule, "expr": "rate(drbot_webhook_delivery_total[5m]) > 1"}], exported, runbook) == [
        "Typo: drbot_webhook_delivery_total is not exported"
    ]
    wrong_label = 'rate(drbot_event_processing_seconds_count{result="dead"}[5m]) > 1'
    assert alert_problems([{**rule, "expr": wrong_label}], exported, runbook) == [
        "Typo: drbot_event_processing_seconds_count has no label result"
    ]
