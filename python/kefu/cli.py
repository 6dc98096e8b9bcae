"""The `kefu` command: serve, and the administration verbs that work on the data directory."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from kefu import auth, settings
from kefu.config import Config, ConfigError


def _parse_skills(values: list[str]) -> dict[str, float]:
    skills: dict[str, float] = {}
    for item in values:
        path, _, level = item.partition(":")
        skills[path.strip("/")] = float(level) if level else 1.0
    return skills


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kefu", description="Kefu live-chat server")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: $KEFU_DATA_DIR or ./data)")
    parser.add_argument("--db", dest="db_url", help="storage URL (sqlite:///path or postgresql://…)")
    parser.add_argument("--config", type=Path, help="TOML settings file (default: $KEFU_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--dev", action="store_true", default=None, help="dev mode (sample secrets allowed)")
    serve.add_argument("--host")
    serve.add_argument("--http-port", type=int)
    serve.add_argument("--ws-port", type=int)
    serve.add_argument("--public-ws-url", help="ws_url handed to clients when behind a proxy")
    serve.add_argument("--sqlite-sync", choices=("FULL", "NORMAL"))
    serve.add_argument("--log-level", help="DEBUG, INFO (default), WARNING, ERROR")
    serve.add_argument("--log-format", choices=settings.LOG_FORMATS, help="json (default) or text")

    site = commands.add_parser("site", help="manage sites").add_subparsers(dest="action", required=True)
    site_create = site.add_parser("create", help="create a site; prints its key")
    site_create.add_argument("--name", required=True)
    site_create.add_argument("--origin", action="append", default=[], help="allowed browser origin (repeat)")
    site.add_parser("list", help="list sites")

    config = commands.add_parser("config", help="inspect the settings").add_subparsers(dest="action", required=True)
    config.add_parser("check", help="validate the settings (file, env) and print them, secrets masked")
    backup = commands.add_parser("backup", help="online copy of the SQLite database (the server may run)")
    backup.add_argument("destination", type=Path, help="file or directory for the copy")
    restore = commands.add_parser("restore", help="replace the SQLite database with a backup (server stopped)")
    restore.add_argument("source", type=Path)
    commands.add_parser("health", help="exit 0 when the local server answers /healthz (the image's HEALTHCHECK)")

    for role in ("admin", "agent"):
        create = commands.add_parser(role, help=f"manage {role}s").add_subparsers(dest="action", required=True)
        sub = create.add_parser("create", help=f"create an {role}")
        sub.add_argument("--site", required=True, help="site key")
        sub.add_argument("--username", required=True)
        sub.add_argument("--password", help="omit to generate one (printed once)")
        sub.add_argument("--name")
        sub.add_argument("--capacity", type=int, default=5)
        sub.add_argument("--skill", action="append", default=[], help="path[:proficiency], e.g. billing/refund:0.8")
        sub.add_argument("--language", action="append", default=[])
        sub.add_argument("--team", action="append", default=[])
    return parser


def config_from(args: argparse.Namespace) -> Config:
    changes: dict[str, Any] = {"data_dir": args.data_dir, "db_url": args.db_url}
    if args.command == "serve":
        changes.update(host=args.host, http_port=args.http_port, ws_port=args.ws_port,
                       public_ws_url=args.public_ws_url, sqlite_sync=args.sqlite_sync, dev=args.dev,
                       log_level=args.log_level, log_format=args.log_format)
    return settings.load(args.config, **changes)


async def _admin_command(config: Config, args: argparse.Namespace) -> dict[str, Any] | list[Any]:
    from kefu.server import open_storage
    from kefu.storage.base import Conflict

    storage = open_storage(config)
    await storage.open()
    try:
        if args.command == "site" and args.action == "create":
            site = await storage.create_site(args.name, tuple(args.origin))
            return {"id": site.id, "key": site.key, "allowed_origins": list(site.allowed_origins)}
        if args.command == "site":
            return [{"id": s.id, "key": s.key, "name": s.name, "allowed_origins": list(s.allowed_origins)}
                    for s in await storage.list_sites()]
        site = await storage.get_site_by_key(args.site)
        if site is None:
            raise SystemExit(f"kefu: unknown site key {args.site!r}")
        password = args.password or secrets.token_urlsafe(12)
        try:
            agent = await storage.create_agent(
                site.id, args.username, auth.hash_password(password), name=args.name or args.username,
                role="admin" if args.command == "admin" else "agent", teams=tuple(args.team),
                skills=_parse_skills(args.skill), capacity=args.capacity, languages=tuple(args.language))
        except Conflict:
            raise SystemExit(f"kefu: username {args.username!r} exists") from None
        result: dict[str, Any] = {"agent_id": agent.id, "username": agent.username, "role": agent.role}
        if not args.password:
            result["password"] = password
        return result
    finally:
        await storage.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args)
    except ConfigError as error:
        print(f"kefu: invalid settings:\n{error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        import uvloop

        os.umask(0o077)  # everything the server creates (database, WAL, secret) is private
        from kefu.backup import DataDirBusy
        from kefu.logging_setup import configure
        from kefu.server import serve

        configure(fmt=config.log_format, level=config.log_level, file=config.log_file)
        try:
            uvloop.run(serve(config))
        except (auth.InsecureSecret, DataDirBusy) as error:
            print(f"kefu: refusing to start: {error}", file=sys.stderr)
            return 2
        return 0
    if args.command == "config":
        print(json.dumps(settings.describe(config), indent=2))
        return 0
    if args.command in ("backup", "restore", "health"):
        from kefu import ops_commands

        return ops_commands.run(args.command, config, args)
    print(json.dumps(asyncio.run(_admin_command(config, args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
