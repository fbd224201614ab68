"""Settings: environment parsing, .env files, per-environment defaults, production refusals."""

from __future__ import annotations

import pytest

from config.settings import (
    INSECURE_JWT_SECRET,
    Settings,
    SettingsError,
    load_settings,
    read_env_file,
)

STRONG = "s" * 48
PRODUCTION_OK = {"APP_ENV": "production", "SECRET_KEY": STRONG, "JWT_SECRET": STRONG + "j",
                 "DEMO_USERS": "ops:admin:" + STRONG}


def test_defaults_are_development_with_the_in_memory_queue():
    settings = load_settings(environ={}, env_file="")
    assert settings.app_env == "development" and not settings.uses_redis
    assert settings.async_mode == "eventlet" and settings.websocket_compression is False


def test_environment_values_are_typed():
    settings = load_settings(environ={
        "WORKERS": "4", "PING_INTERVAL": "10.5", "WEBSOCKET_COMPRESSION": "true",
        "TRANSPORTS": "websocket", "CORS_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "MESSAGE_QUEUE_URL": "redis://cache:6379/1"}, env_file="")
    assert settings.workers == 4 and settings.ping_interval == 10.5
    assert settings.websocket_compression is True and settings.transports == ("websocket",)
    assert settings.cors_allowed_origins == ("https://a.example", "https://b.example")
    assert settings.uses_redis


@pytest.mark.parametrize("name, value, fragment", [
    ("WORKERS", "many", "WORKERS"),
    ("WEBSOCKET_COMPRESSION", "perhaps", "boolean"),
    ("ASYNC_MODE", "threading", "ASYNC_MODE"),
    ("APP_ENV", "staging", "APP_ENV"),
    ("JWT_ALGORITHM", "none", "JWT_ALGORITHM"),
    ("MESSAGE_QUEUE_URL", "amqp://x", "MESSAGE_QUEUE_URL"),
    ("TRANSPORTS", "carrier-pigeon", "TRANSPORTS"),
    ("ENGINEIO_TRANSPORT", "bespoke", "ENGINEIO_TRANSPORT must be one of template, stock"),
    ("WORKERS", "0", "WORKERS"),
    ("LOG_LEVEL", "verbose", "LOG_LEVEL must be one of CRITICAL"),
    ("JWT_SECRET", "", "JWT_SECRET must not be empty"),
    ("JWT_SECRET", '{"kty": "oct", "k": "c2VjcmV0"}', "JWT_SECRET is not usable as an HMAC"),
    ("JWT_SECRET", "ssh-rsa AAAAB3NzaC1yc2E", "JWT_SECRET is not usable as an HMAC secret: The "),
    ("MESSAGE_QUEUE_PARTITIONS", "0", "MESSAGE_QUEUE_PARTITIONS must be 1 to 64"),
    ("MESSAGE_QUEUE_PARTITIONS", "65", "MESSAGE_QUEUE_PARTITIONS must be 1 to 64"),
])
def test_bad_values_are_refused_with_their_name(name, value, fragment):
    with pytest.raises(SettingsError, match=fragment):
        load_settings(environ={name: value}, env_file="")


def test_a_log_level_is_read_in_any_case():
    assert load_settings(environ={"LOG_LEVEL": "debug"}, env_file="").log_level == "DEBUG"
    assert load_settings(environ={"LOG_LEVEL": "warn"}, env_file="").log_level == "WARN"


@pytest.mark.parametrize("environ, fragment", [
    ({"WORKERS": "2", "TRANSPORTS": "websocket"}, "MESSAGE_QUEUE_URL"),
    ({"WORKERS": "2", "MESSAGE_QUEUE_URL": "redis://h/0"}, "TRANSPORTS=websocket"),
])
def test_several_workers_need_a_queue_and_websocket_only(environ, fragment):
    with pytest.raises(SettingsError, match=fragment):
        load_settings(environ=environ, env_file="")


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h:6380/0", "redis://h",
                                 "redis://:secret@h:6379/0", "redis://[::1]:6379/0",
                                 "unix:///run/redis/redis.sock?db=0",
                                 "redis+sentinel://h1:26379,h2:26379/0/mymaster",
                                 "redis+sentinel://:secret@h1:26379/0/mymaster",
                                 "redis+cluster://n1:6379,n2:6379", "rediss+cluster://:s@n1:6380/0",
                                 "redis+cluster://[::1]:7000,[fe80::1%25eth0]:7001"])
def test_queue_urls_accepted(url):
    assert load_settings(environ={"MESSAGE_QUEUE_URL": url}, env_file="").uses_redis


@pytest.mark.parametrize("url, fragment", [
    # redis-py reads a missing host as localhost: in a container, never the intended Redis
    ("redis://", "needs a host"),
    ("rediss:///0", "needs a host"),
    ("redis://:secret@/0", "needs a host"),
    ("redis://h:port/0", "invalid port"),
    ("unix://", "socket's path"),
    ("redis+sentinel://", "host:port"),
    ("redis+sentinel://h1,h2:26379/0/mymaster", "host:port"),
    ("redis+cluster://", "host:port"),
    ("redis+cluster://:secret@n1:6379/2", "database can only be 0"),
])
def test_queue_urls_without_a_host_are_refused(url, fragment):
    with pytest.raises(SettingsError, match=f"MESSAGE_QUEUE_URL .*{fragment}") as refused:
        load_settings(environ={"MESSAGE_QUEUE_URL": url}, env_file="")
    assert "secret" not in str(refused.value)  # the URL's password is never echoed


@pytest.mark.parametrize("channel, expected", [("realtime", "{realtime}"), ("{app}:rt", "{app}:rt"),
                                               ("a{}b{c}", "{a{}b{c}}")])
def test_on_a_redis_cluster_the_channel_carries_a_hash_tag(channel, expected):
    settings = load_settings(environ={"MESSAGE_QUEUE_URL": "redis+cluster://n1:6379",
                                      "MESSAGE_QUEUE_CHANNEL": channel}, env_file="")
    assert settings.message_queue_channel == expected and settings.uses_redis_cluster
    with pytest.raises(SettingsError, match="MESSAGE_QUEUE_CHANNEL needs a hash tag"):
        Settings(message_queue_url="redis+cluster://n1:6379", message_queue_channel="{}x").validate()


def test_env_file_is_read_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nTIMEOUT=3\nexport LOG_LEVEL='WARNING'\nBIND=\"0.0.0.0:9\"\n"
                        "garbage line\n")
    assert read_env_file(env_file) == {"TIMEOUT": "3", "LOG_LEVEL": "WARNING", "BIND": "0.0.0.0:9"}
    settings = load_settings(environ={"TIMEOUT": "5"}, env_file=env_file)
    assert settings.timeout == 5 and settings.log_level == "WARNING" and settings.bind == "0.0.0.0:9"


def test_env_file_comes_from_env_file_variable(tmp_path):
    env_file = tmp_path / "custom.env"
    env_file.write_text("TIMEOUT=7\n")
    assert load_settings(environ={"ENV_FILE": str(env_file)}).timeout == 7
    assert load_settings(environ={"ENV_FILE": ""}).timeout == 30


def test_production_with_real_secrets_starts():
    settings = load_settings(environ=PRODUCTION_OK, env_file="")
    assert settings.is_production and settings.bind == "0.0.0.0:5000"


@pytest.mark.parametrize("change, fragment", [
    ({"SECRET_KEY": ""}, "SECRET_KEY is missing"),
    ({"JWT_SECRET": None}, "JWT_SECRET is missing"),
    ({"JWT_SECRET": INSECURE_JWT_SECRET}, "JWT_SECRET is missing or the development default"),
    ({"JWT_SECRET": "short"}, "at least 32"),
    ({"CORS_ALLOWED_ORIGINS": "*"}, "CORS_ALLOWED_ORIGINS"),
    ({"DEMO_USERS": None}, "DEMO_USERS"),
])
def test_production_refuses_unsafe_values(change, fragment):
    environ = {**PRODUCTION_OK, **change}
    environ = {key: value for key, value in environ.items() if value is not None}
    with pytest.raises(SettingsError, match=fragment):
        load_settings(environ=environ, env_file="")


@pytest.mark.parametrize("demo_users", [
    "alice:user:alice-password,bob:user:bob-password,admin:admin:admin-password",
    "ops:admin:" + STRONG + ",carol:user:carol-password",
    "root:admin:root-password",
])
def test_production_refuses_any_demo_user_with_the_published_password_pattern(demo_users):
    with pytest.raises(SettingsError, match=r"DEMO_USERS gives .* <name>-password"):
        load_settings(environ={**PRODUCTION_OK, "DEMO_USERS": demo_users}, env_file="")


def test_production_accepts_demo_users_with_their_own_passwords_or_none():
    for demo_users in ("carol:user:carol-pass-" + STRONG, ""):
        assert load_settings(environ={**PRODUCTION_OK, "DEMO_USERS": demo_users},
                             env_file="").is_production


@pytest.mark.parametrize("command", [
    ["-c", "import wsgi"],  # what gunicorn loads, and `flask --app wsgi`
    ["-m", "gunicorn", "-c", "config/gunicorn.conf.py"],  # gunicorn reads its config first
    ["-m", "flask", "--app", "wsgi", "emit", "lobby", "hi"],
])
def test_a_refusal_is_the_list_of_problems_alone(command):
    """(gunicorn printed the list inside a 13-line traceback.)"""
    import subprocess
    import sys

    from tests.helpers import ROOT, process_environment

    env = process_environment(APP_ENV="production", WORKERS="0")
    env.pop("JWT_SECRET")
    result = subprocess.run([sys.executable, *command], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("invalid configuration:\n  - "), result.stderr
    assert "SECRET_KEY is missing" in result.stderr and "JWT_SECRET is missing" in result.stderr
    assert "Traceback" not in result.stderr and "WORKERS must be positive" in result.stderr


def test_every_setting_is_documented_in_env_example():
    from tests.helpers import ROOT

    documented = read_env_file(ROOT / ".env.example")
    commented = {line.lstrip("# ").split("=", 1)[0]
                 for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    for name in Settings.__dataclass_fields__:
        assert name.upper() in documented or name.upper() in commented, name
