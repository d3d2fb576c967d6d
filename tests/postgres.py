"""A throwaway PostgreSQL server for the tests and benchmarks: initdb and pg_ctl as the
`postgres` user (initdb refuses root), a data directory under /tmp, a unix socket only."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PASSWORD_ROLE, PASSWORD = "gw_password", "s3cret-pw"  # a role that must log in by password


def binaries() -> Path | None:
    """The newest server's bin directory: Debian's /usr/lib/postgresql/N/bin, or PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class Server:
    """One server, started once; `url(db)` names a database on it."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.bin = binaries()
        self.root = Path(tempfile.mkdtemp(prefix="gateway-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.socket = str(self.root)
        self.settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket}'",
            "max_connections": "300",
            "fsync": "off",  # a test server: a crash of the machine loses nothing of value
            "synchronous_commit": "on",  # but a commit acknowledged survives a kill of the server
            **(settings or {}),
        }

    def _tool(self, name: str) -> str:
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine")
        return str(self.bin / name)

    def _as_postgres(self, *argv: str) -> list[str]:
        if os.geteuid() != 0:
            return list(argv)
        return ["runuser", "-u", "postgres", "--", *argv]

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(self._tool("initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8")  # fmt: skip
        hba = self.data / "pg_hba.conf"
        lines = f"local all {PASSWORD_ROLE} scram-sha-256\n" + hba.read_text()
        self._run("sh", "-c", f"cat > {hba}", stdin=lines)
        with open(self.data / "postgresql.conf", "a") as conf:  # as root: owned by postgres
            conf.writelines(f"{k} = {v}\n" for k, v in self.settings.items())
        self.resume()
        self.psql(f"CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")

    def resume(self) -> None:
        """Start (or start again after `stop`) and wait until it takes connections."""
        log = str(self.root / "server.log")
        self._run(self._tool("pg_ctl"), "-D", str(self.data), "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self._tool("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._run(
            self._tool("psql"), "-h", self.socket, "-U", "postgres", "-d", db,
            "-At", "-v", "ON_ERROR_STOP=1", "-c", sql,
        )  # fmt: skip

    def url(self, db: str = "postgres", user: str = "postgres", password: str = "") -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{user}{secret}@/{db}?host={self.socket}"

    def _run(self, *argv: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            self._as_postgres(*argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
        return done.stdout
