"""The typed configuration: TOML file < environment < flags, validation with clear errors, masking;
and the log redaction that keeps tokens and passwords out of log lines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from kefu import settings
from kefu.config import ConfigError
from kefu.logging_setup import JsonFormatter, redact


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kefu.toml"
    path.write_text(text)
    return path


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, 'http_port = 9000\nws_port = 9001\n[limits]\nrate_per_s = 20\nreplay_limit = 7\n')
    config = settings.load(path, {"KEFU_WS_PORT": "9101"}, ws_port=None, replay_limit=9)
    assert (config.http_port, config.ws_port, config.rate_per_s, config.replay_limit) == (9000, 9101, 20.0, 9)


def test_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'host = "0.0.0.0"\nsentiment = false\n')
    config = settings.load(None, {"KEFU_CONFIG": str(path)})
    assert config.host == "0.0.0.0" and config.sentiment is False


@pytest.mark.parametrize(("text", "message"), [
    ("htp_port = 1\n", "unknown setting 'htp_port'"),
    ('http_port = "80"\n', "http_port: expected int, got str '80'"),
    ("http_port = 70000\n", "http_port: 70000 is not a TCP port"),
    ('sqlite_sync = "OFF"\n', "sqlite_sync: 'OFF' is not FULL or NORMAL"),
    ("rate_per_s = 0\n", "rate_per_s: 0.0 must be positive"),
    ('tls_cert = "/nonexistent.pem"\n', "set both or neither"),
    ("behind_proxy = true\n", "needs public_ws_url"),
    ('log_format = "xml"\n', "log_format: 'xml' is not one of json, text"),
    ("http_port = [\n", "config file"),
])
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings.load(write(tmp_path, text), {})
    assert message in str(error.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        settings.load(None, {"KEFU_HTTP_PORT": "-1", "KEFU_LOG_LEVEL": "LOUD", "TLS_KEY": "/k"})
    assert len(str(error.value).splitlines()) == 4  # port, the pair, the unreadable key, the level


@pytest.mark.parametrize(("env", "message"), [
    ({"KEFU_HTTP_PORT": "eighty"}, "KEFU_HTTP_PORT: expected an integer, got 'eighty'"),
    ({"KEFU_DEV": "maybe"}, "KEFU_DEV: expected one of"),
    ({"KEFU_IDLE_TIMEOUT_S": "soon"}, "KEFU_IDLE_TIMEOUT_S: expected a number"),
])
def test_bad_env_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings.load(None, env)


def test_describe_masks_secrets() -> None:
    config = settings.load(None, {"KEFU_SECRET": "s" * 40, "DB_HOST": "db", "DB_PASSWORD": "hunter2-pw"})
    shown = json.dumps(settings.describe(config))
    assert "hunter2-pw" not in shown and "s" * 40 not in shown
    assert "postgresql://postgres:***@db:5432/kefu" in shown


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "kefu.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=60)


def test_config_check_command(tmp_path: Path) -> None:
    good = run_cli("--config", str(write(tmp_path, "http_port = 8443\n")), "config", "check", env={})
    assert good.returncode == 0 and json.loads(good.stdout)["http_port"] == 8443
    bad = run_cli("config", "check", env={"KEFU_WS_PORT": "x"})
    assert bad.returncode == 2 and "KEFU_WS_PORT: expected an integer" in bad.stderr


@pytest.mark.parametrize("line", [
    "GET /ws?token=v1.abc.def HTTP/1.1",
    "Authorization: Bearer v1.abc.def",
    '{"username": "a", "password": "v1.abc.def"}',
    "secret=v1.abc.def",
])
def test_redact_hides_tokens_and_passwords(line: str) -> None:
    assert "v1.abc.def" not in redact(line) and "***" in redact(line)


def test_json_formatter_redacts_extra_fields_and_message() -> None:
    record = logging.LogRecord("kefu.test", logging.WARNING, __file__, 1, "login %s", ("token=v1.abc",), None)
    record.url = "/ws?token=v1.xyz"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "login token=***" and entry["url"] == "/ws?token=***" and entry["level"] == "warning"


@pytest.mark.parametrize(("host", "request_host", "expected"), [
    ("0.0.0.0", "chat.example.com:8080", "wss://chat.example.com:8081/ws"),
    ("0.0.0.0", "[2001:db8::1]:8080", "wss://[2001:db8::1]:8081/ws"),
    ("0.0.0.0", 'evil"/path', "wss://127.0.0.1:8081/ws"),  # not a host name: not reflected
    ("0.0.0.0", None, "wss://127.0.0.1:8081/ws"),
    ("10.1.2.3", "chat.example.com", "wss://10.1.2.3:8081/ws"),  # a concrete address wins
])
def test_ws_url_on_a_wildcard_address_follows_the_request(host: str, request_host: str | None,
                                                          expected: str) -> None:
    config = settings.load(None, {"KEFU_HOST": host, "KEFU_WS_PORT": "8081"}, tls_cert=None).replace(tls_cert="c")
    assert config.ws_url(request_host) == expected
