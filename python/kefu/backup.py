"""`kefu backup` and `kefu restore` for the SQLite store, and the data-directory lock they share with
`kefu serve`.

Backup uses SQLite's online backup API, so it runs against a live server: the copy is a consistent
snapshot of committed transactions (WAL readers do not block the writer). Restore refuses while a
server holds the data directory, checks the backup (integrity_check and Kefu's schema), keeps the
current database beside it as kefu.db.pre-restore-<time>, and swaps the files. PostgreSQL deployments
use pg_dump / pg_restore instead (docs/deployment.md).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import IO, Any

LOCK_NAME = "kefu.lock"
_PAGES_PER_STEP = 4096  # copy in steps so a large backup lets the live writer in between steps


class DataDirBusy(RuntimeError):
    pass


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the data directory for as long as the returned file stays open.
    The kernel drops it when the process dies, so a kill -9 never leaves a stale lock."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / LOCK_NAME).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirBusy(f"another kefu process is using {data_dir} (kefu serve running?)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def backup(database: Path, destination: Path) -> dict[str, Any]:
    """Consistent online copy of `database` into `destination` (written to a temporary name, then renamed)."""
    if not database.is_file():
        raise FileNotFoundError(f"no database at {database}")
    destination = destination / "kefu-backup.db" if destination.is_dir() else destination
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    target = sqlite3.connect(partial)
    try:
        source.backup(target, pages=_PAGES_PER_STEP)
        target.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
    finally:
        target.close()
        source.close()
    _fsync(partial)
    os.replace(partial, destination)
    return {"backup": str(destination), "bytes": destination.stat().st_size,
            "seconds": round(time.perf_counter() - started, 3)}


def verify(path: Path) -> None:
    """Raise ValueError unless `path` is an intact SQLite file holding Kefu's schema."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as error:
        raise ValueError(f"{path} is not a usable SQLite database: {error}") from None
    if result != "ok":
        raise ValueError(f"{path} failed integrity_check: {result}")
    if not {"sites", "conversations", "messages"} <= tables:
        raise ValueError(f"{path} does not hold a Kefu database (tables: {', '.join(sorted(tables)) or 'none'})")


def restore(source: Path, database: Path, data_dir: Path) -> dict[str, Any]:
    """Replace `database` with the backup `source`; the server must be stopped."""
    verify(source)
    lock = lock_data_dir(data_dir)
    try:
        kept: Path | None = None
        if database.exists():
            # Fold the WAL into the old file first so the kept copy is complete on its own.
            conn = sqlite3.connect(database)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            kept = database.with_name(f"{database.name}.pre-restore-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(database, kept)
        # A WAL left beside the new file would be replayed into it: remove it before the swap.
        for suffix in ("-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        incoming = database.with_name(database.name + ".restoring")
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(incoming)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        _fsync(incoming)
        os.replace(incoming, database)
        return {"restored": str(database), "from": str(source), "previous": str(kept) if kept else None}
    finally:
        lock.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
