"""The cluster's configuration files, checked without starting anything (there is no Docker engine here).

docker-compose.yml's ``cluster`` profile must describe the topology of
``make cluster``; HAProxy must accept both configurations; the settings the
profile gives the app must name its own services.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.cluster.conftest import chatcluster
from tests.servers import ROOT

COMPOSE = ROOT / "docker-compose.yml"
CLUSTER = ROOT / "deploy" / "cluster"
PROFILE = {
    "cluster-haproxy", "app-1", "app-2", "cluster-migrate", "pg-primary", "pg-standby",
    "redis-primary", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3",
}  # fmt: skip


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def cluster_env() -> dict[str, str]:
    values = {}
    for line in (CLUSTER / "env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_the_cluster_profile_has_the_topology_and_leaves_the_default_stack_alone():
    services = compose()["services"]
    in_profile = {name for name, service in services.items() if "cluster" in service.get("profiles", [])}
    assert in_profile == PROFILE
    # `docker compose up` without the profile starts what it started before.
    assert all(not service.get("profiles") for name, service in services.items() if name not in PROFILE)
    for node in ("app-1", "app-2"):
        assert services[node]["command"] == ["scripts/serve.sh"]  # the server and its own worker
        paths = [entry["path"] for entry in services[node]["env_file"]]
        assert paths[:3] == ["deploy/env.example", "deploy/env", "deploy/cluster/env.example"]
        assert services[node]["depends_on"]["cluster-migrate"]["condition"] == "service_completed_successfully"
    assert "--replicaof" in services["redis-replica"]["command"]
    assert services["pg-standby"]["entrypoint"] == ["/usr/local/bin/pg-standby.sh"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_the_profiles_settings_name_its_services():
    values = cluster_env()
    services = compose()["services"]
    assert urlsplit(values["DATABASE_URL"]).hostname == "pg-primary"
    assert urlsplit(values["DATABASE_REPLICA_URL"]).hostname == "pg-standby"
    for url in (values["DATABASE_URL"], values["DATABASE_REPLICA_URL"]):
        assert "REPLACE-ME" in urlsplit(url).password
    assert "REPLACE-ME" in values["PGPASSWORD"]
    sentinels = [entry.split(":")[0] for entry in values["REDIS_SENTINELS"].split(",")]
    assert sorted(sentinels) == ["sentinel-1", "sentinel-2", "sentinel-3"] and set(sentinels) <= set(services)
    monitored = next(line.split() for line in (CLUSTER / "sentinel.conf").read_text().splitlines() if line.startswith("sentinel monitor"))
    assert urlsplit(values["REDIS_URL"]).hostname == monitored[2] == chatcluster.SERVICE
    assert monitored[3] == "redis-primary" and int(monitored[5]) == 2  # quorum: two of three
    # After a failover the new primary's cache is emptied (deploy/cluster/redis-failover.sh).
    script = next(line.split() for line in (CLUSTER / "sentinel.conf").read_text().splitlines() if "client-reconfig-script" in line)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["sentinel-1"]["volumes"]}
    assert mounts[script[3]] == "./deploy/cluster/redis-failover.sh"
    assert urlsplit(values["REDIS_URL"]).path == "/0"  # the database the script empties (CHAT_REDIS_DB defaults to 0)


@pytest.mark.parametrize("which", ["compose", "make cluster"])
def test_haproxy_accepts_the_configuration(which: str, tmp_path: Path):
    if which == "compose":
        config = CLUSTER / "haproxy.cfg"
        nodes = compose()["services"]
        text = config.read_text()
        assert "server node1 app-1:8000 check" in text and "server node2 app-2:8000 check" in text
        assert {"app-1", "app-2"} <= set(nodes)
    else:
        cluster = chatcluster.Cluster(tmp_path, chatcluster.Ports.fixed(17000))
        text = cluster.haproxy_config()
        config = tmp_path / "haproxy.cfg"
        config.write_text(text)
    assert "uri /healthz" in text and "timeout tunnel" in text and "level admin" in text
    done = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
