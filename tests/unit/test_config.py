"""Configuration from defaults and environment."""

from pathlib import Path

from kefu.config import Config


def test_defaults_are_embedded_sqlite_on_loopback() -> None:
    config = Config.from_env({})
    assert config.storage_url().startswith("sqlite:///") and config.storage_url().endswith("data/kefu.db")
    assert (config.host, config.http_port, config.ws_port, config.dev) == ("127.0.0.1", 8080, 8081, False)
    assert config.ws_url() == "ws://127.0.0.1:8081/ws"


def test_environment_overrides() -> None:
    config = Config.from_env({
        "KEFU_DATA_DIR": "/srv/kefu", "DB_HOST": "db.internal", "DB_USER": "kefu", "DB_PASSWORD": "p@ss word",
        "DB_NAME": "chat", "REDIS_URL": "redis://cache:6379/0", "REDIS_PASS": "s3cret", "KEFU_WS_PORT": "9001",
        "KEFU_PUBLIC_WS_URL": "wss://chat.example.com/ws", "KEFU_DEV": "1", "KEFU_REPLAY_LIMIT": "50",
    })
    assert config.data_dir == Path("/srv/kefu")
    assert config.storage_url() == "postgresql://kefu:p%40ss%20word@db.internal:5432/chat"
    assert config.redis_url == "redis://:s3cret@cache:6379/0"
    assert config.ws_port == 9001 and config.ws_url() == "wss://chat.example.com/ws"
    assert config.dev and config.replay_limit == 50
    assert Config.from_env({"DB_URL": "sqlite:///x.db", "DB_HOST": "ignored"}).storage_url() == "sqlite:///x.db"


def test_replace_ignores_unset_values() -> None:
    config = Config().replace(http_port=None, ws_port=0, host="0.0.0.0")
    assert (config.http_port, config.ws_port, config.host) == (8080, 0, "0.0.0.0")
