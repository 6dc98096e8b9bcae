"""Issue 8, items 7 and 13: the data directory is private (0700; database, WAL, shared memory and
secret 0600), the first-start admin password never goes to a log, and a 409 for a taken username
names nothing about other sites."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid

from kefu.config import Config
from kefu.server import INITIAL_PASSWORD_FILE, bootstrap
from kefu.storage.sqlite import SqliteStorage
from kefu_client import Api


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_data_directory_and_database_files_are_private(api: Api) -> None:
    data = api.server.data_dir
    await api.visitor()  # some writes, so the WAL exists
    assert mode(data) == 0o700
    for name in ("kefu.db", "kefu.db-wal", "kefu.db-shm", "secret.key", INITIAL_PASSWORD_FILE):
        assert mode(data / name) == 0o600, name


async def test_existing_loose_permissions_are_tightened(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "kefu.db").touch(mode=0o644)
    os.chmod(data, 0o755)
    os.chmod(data / "kefu.db", 0o644)
    from kefu.server import open_storage

    storage = open_storage(Config(data_dir=data))
    await storage.open()
    await storage.list_sites()
    await storage.close()
    assert mode(data) == 0o700 and mode(data / "kefu.db") == 0o600


async def test_admin_password_is_in_a_private_file_not_in_the_log(api: Api) -> None:
    output = "".join(api.server.output)
    password = api.server.admin_password
    assert password and password not in output
    assert f"password in {(api.server.data_dir / INITIAL_PASSWORD_FILE).resolve()}" in output
    assert (await api.admin())["role"] == "admin"


async def test_admin_password_is_shown_on_a_terminal(tmp_path) -> None:
    controller, terminal = os.openpty()
    out = os.fdopen(terminal, "w")
    storage = SqliteStorage(tmp_path / "kefu.db")
    await storage.open()
    try:
        await bootstrap(storage, Config(data_dir=tmp_path), out=out)
    finally:
        await storage.close()
    out.close()
    shown = os.read(controller, 65536).decode()
    os.close(controller)
    assert "username 'admin', password '" in shown and "shown only once" in shown
    assert not (tmp_path / INITIAL_PASSWORD_FILE).exists()


async def test_username_conflict_reveals_nothing_about_other_sites(api: Api) -> None:
    def cli(*args: str) -> dict:
        result = subprocess.run([sys.executable, "-m", "kefu.cli", "--data-dir", str(api.server.data_dir), *args],
                                capture_output=True, text=True, timeout=60, check=True)
        return json.loads(result.stdout)

    other_site = cli("site", "create", "--name", "Other")
    other_admin = cli("admin", "create", "--site", other_site["key"], "--username", f"boss-{uuid.uuid4().hex[:6]}")
    login = await api.login(other_admin["username"], other_admin["password"])
    taken = f"alice-{uuid.uuid4().hex[:6]}"
    admin = await api.admin()
    status, _ = await api.request("POST", "/api/v1/admin/agents", token=admin["token"],
                                  body={"username": taken, "password": "password1"})
    assert status == 201
    status, answer = await api.request("POST", "/api/v1/admin/agents", token=login["token"],
                                       body={"username": taken, "password": "password1"})
    assert status == 409 and taken not in answer["msg"] and "site" not in answer["msg"]
    status, listing = await api.request("GET", "/api/v1/admin/agents", token=login["token"])
    assert taken not in json.dumps(listing)
