"""Dockerfile, .dockerignore and docker-compose.yml agree with each other and with the code (Docker is not
run here; YAML is not a dependency, so these are text checks of the facts that matter)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from hearth.server import rest
from hearth.server.app import resolve

ROOT = Path(__file__).resolve().parents[1]


def read(name: str) -> str:
    return (ROOT / name).read_text()


def test_compose_replica_set_is_consistent():
    compose = read("docker-compose.yml")
    assert re.search(r"^  mongo:\n    image: mongo:7\n", compose, re.MULTILINE)
    set_name = re.search(r'"--replSet", "(\w+)"', compose).group(1)
    initiated = re.search(r'rs\.initiate\(\{_id: "(\w+)", members: \[\{_id: 0, host: "(\w+):27017"\}\]\}\)', compose)
    assert initiated and initiated.groups() == (set_name, "mongo")  # the member is reachable as the service
    storage = re.search(r"HEARTH_STORAGE: (\S+)", compose).group(1)
    assert storage == f"mongodb://mongo:27017/hearth?replicaSet={set_name}"
    # Hearth waits for the primary, which the healthcheck reports
    assert re.search(r"depends_on:\n\s+mongo:\n\s+condition: service_healthy", compose)
    assert "isWritablePrimary" in compose


def test_dockerfile_serves_on_all_interfaces_with_a_real_health_route():
    dockerfile = read("Dockerfile")
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)[-1] == "python:3.11-slim"  # the runtime stage
    assert 'ENTRYPOINT ["hearth"]' in dockerfile and 'CMD ["serve", "--host", "0.0.0.0"]' in dockerfile
    assert "VOLUME /data" in dockerfile and "HEARTH_STORAGE=/data/hearth.db" in dockerfile
    probe = re.search(r"HEALTHCHECK .*?http://127\.0\.0\.1:%s(/\w+)'", dockerfile, re.DOTALL).group(1)
    assert resolve("GET", probe) == (rest.healthz, [])
    port = re.search(r"HEARTH_PORT=(\d+)", dockerfile).group(1)
    assert f'"{port}:{port}"' in read("docker-compose.yml") and f"EXPOSE {port}" in dockerfile


def test_dockerignore_keeps_what_the_wheel_needs():
    ignored = {line.strip() for line in read(".dockerignore").splitlines() if line.strip() and line[0] != "#"}
    project = tomllib.loads(read("pyproject.toml"))
    packages = list(project["tool"]["setuptools"]["package-dir"].values())
    needed = {"pyproject.toml", project["project"]["readme"], *packages}
    assert needed.isdisjoint(ignored)


def test_compose_replicas_profile_serves_three_replicas_behind_one_proxy():
    compose = read("docker-compose.yml")
    replica = re.search(r"^  hearth-replica:\n(.*?)\n\n", compose, re.MULTILINE | re.DOTALL).group(1)
    assert 'profiles: ["replicas"]' in replica and re.search(r"deploy:\n\s+replicas: 3", replica)
    assert re.search(r"HEARTH_STORAGE: (\S+)", replica).group(1) == re.search(r"HEARTH_STORAGE: (\S+)", compose).group(1)
    assert "HEARTH_EXPORT_DIR: /exports" in replica and "- exports:/exports" in replica  # files shared
    assert re.search(r"depends_on:\n\s+mongo:\n\s+condition: service_healthy", replica)
    assert not re.search(r"^    ports:", replica, re.MULTILINE)  # reached through the proxy only
    proxy = re.search(r"^  proxy:\n(.*?)\n\n", compose, re.MULTILINE | re.DOTALL).group(1)
    assert 'profiles: ["replicas"]' in proxy and "target: /etc/nginx/conf.d/default.conf" in proxy
    port = re.search(r"HEARTH_PORT=(\d+)", read("Dockerfile")).group(1)  # where the image serves
    assert f"upstream hearth_replicas {{ server hearth-replica:{port}; }}" in compose
    assert "proxy_pass http://hearth_replicas;" in compose and "Upgrade $$http_upgrade" in compose
