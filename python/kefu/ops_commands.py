"""The operator verbs of `kefu` that are not about chat data: backup, restore, health."""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import urllib.request
from pathlib import Path

from kefu import backup
from kefu.config import Config
from kefu.tls import find_pair

_NOT_SQLITE = ("kefu: {verb} works on the SQLite store; for PostgreSQL use pg_dump / pg_restore "
               "(docs/deployment.md)")


def run(command: str, config: Config, args: argparse.Namespace) -> int:
    if command == "health":
        return health(config)
    url = config.storage_url()
    if not url.startswith("sqlite:///"):
        print(_NOT_SQLITE.format(verb=command), file=sys.stderr)
        return 2
    database = Path(url.removeprefix("sqlite:///"))
    try:
        if command == "backup":
            result = backup.backup(database, args.destination)
        else:
            result = backup.restore(args.source, database, config.data_dir)
    except (OSError, ValueError, backup.DataDirBusy) as error:
        print(f"kefu {command}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def health(config: Config) -> int:
    """GET /healthz on this host's API port; certificate names are not checked (it is our own server)."""
    tls = bool(config.tls_cert) or bool(config.tls_dir and find_pair(config.tls_dir))
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    host = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{host}:{config.http_port}/healthz"
    context = ssl._create_unverified_context() if tls else None
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"kefu health: {url}: {error}", file=sys.stderr)
        return 1
