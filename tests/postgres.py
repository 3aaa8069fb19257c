"""A throwaway PostgreSQL server for the tests: `initdb` + `pg_ctl` in a temporary directory.

The server is real (Debian's `postgresql` package; `.ci/run` installs it), runs as a non-root
user (PostgreSQL refuses root: under root the tests run it as `postgres`, or `nobody`), listens
on a free loopback port only, and is stopped and deleted at the end of the session. Each test
gets a database of its own (`PostgresServer.new_database`), which is cheap: one
`CREATE DATABASE` from the template.

Durability is switched off (`fsync`, `synchronous_commit`): the tests are about behaviour, and
a server killed with its directory needs no crash safety. Benchmarks keep it on (`durable`).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import psycopg

SUPERUSER = "watchdog"
PASSWORD_GROUP = "password_login"
"""Members of this role must log in over TCP with their password (scram-sha-256); every
other role is trusted, as the superuser the fixtures use."""
_HBA = f"""local all all trust
host all +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""


def postgres_bindir() -> Path | None:
    """The directory of `initdb`, `pg_ctl` and `postgres`: Debian keeps them off PATH under
    /usr/lib/postgresql/<version>/bin; elsewhere they are on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    for directory in reversed(candidates):
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_user() -> pwd.struct_passwd | None:
    """Under root, the account to run the server as; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root with neither a 'postgres' nor a 'nobody' account")


class PostgresServer:
    """One started cluster; `url()` names a database on it, `stop()` removes everything."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self._bindir = bindir
        self._durable = durable
        self._user = _server_user()
        self._root = Path(tempfile.mkdtemp(prefix="watchdog-pg-"))
        self.data = self._root / "data"
        self.port = 0
        self._names = itertools.count(1)
        if self._user is not None:
            os.chown(self._root, self._user.pw_uid, self._user.pw_gid)

    def _run(self, args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(a) for a in args]
        if self._user is not None:
            command = [
                "setpriv",
                f"--reuid={self._user.pw_uid}",
                f"--regid={self._user.pw_gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
            cwd=self._root,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"},
        )

    def start(self) -> None:
        """initdb, then start on a free loopback port (retried if another process took it)."""
        self._run(
            [
                self._bindir / "initdb",
                "-D",
                self.data,
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        )
        (self.data / "pg_hba.conf").write_text(_HBA)
        for _attempt in range(5):
            self.port = _free_port()
            options = (
                f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1"
                " -c max_connections=200"
            )
            if not self._durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            started = self._run(
                [
                    self._bindir / "pg_ctl",
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    self.data,
                    "-l",
                    self._root / "server.log",
                    "-o",
                    options,
                ],
                check=False,
            )
            if started.returncode == 0:
                with psycopg.connect(self.url(), autocommit=True) as conn:
                    conn.execute(f"CREATE ROLE {PASSWORD_GROUP} NOLOGIN")
                return
        log = (self._root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def role_with_password(self, password: str, database_url: str) -> str:
        """Make a login role (roles are the cluster's: one per database) that needs
        `password` and owns the database of `database_url` (from `new_database`); the URL
        of that database as this role, password included."""
        database = database_url.rpartition("/")[2]
        name = f"{database}_owner"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE {PASSWORD_GROUP}")
            conn.execute(f"ALTER DATABASE {database} OWNER TO {name}")
        return f"postgresql://{name}:{password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server at once and delete its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    [self._bindir / "pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w"],
                    check=False,
                )
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


class CommitCutter:
    """A loopback TCP proxy to the server that, once `arm`ed, cuts the client's connection
    right after passing on a COMMIT: the server commits, the client never hears so."""

    def __init__(self, server_port: int) -> None:
        self._server_port = server_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._armed = threading.Event()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database_url: str) -> str:
        """`database_url` (on the server) through this proxy."""
        return database_url.replace(f":{self._server_port}/", f":{self.port}/")

    def arm(self) -> None:
        self._armed.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._server_port))
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
                if from_client and b"COMMIT" in data and self._armed.is_set():
                    self._armed.clear()
                    self.cuts += 1
                    source.shutdown(socket.SHUT_RDWR)  # the server keeps what it got
                    return

    def close(self) -> None:
        self._listener.close()
