"""PostgreSQL fixtures: a throw-away database on the local server (127.0.0.1:5432, trust auth).

``postgres_url`` is one database per test session; ``fresh_postgres_url`` one per test;
``db_url`` is parametrised over a SQLite file and a fresh PostgreSQL database so register
code is tested on both backends it supports. Where nothing answers on 127.0.0.1:5432 (a
fresh Debian machine: its cluster does not trust local TCP logins), the session starts a
cluster of its own on a free port instead, so the PostgreSQL cases never skip.

``private_postgres`` is a cluster of the test's own (initdb on a free port) for tests that
stop and start the server: the shared one serves every other test and must never be
restarted. Both need Debian's server binaries (package ``postgresql``, which ``./setup.sh
install`` installs); without them the test fails saying so.
"""

from __future__ import annotations

import atexit
import functools
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import required
from tests.support.ports import free_port

POSTGRES_HOST = os.environ.get("CW_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("CW_TEST_POSTGRES_PORT", "5432"))
POSTGRES_USER = os.environ.get("CW_TEST_POSTGRES_USER", "postgres")


PSYCOPG_PIP = "the collector extra: pip install -e '.[dev]'"


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str


@functools.cache
def _server() -> Server:
    """The server test databases go on, chosen once per session: the configured one
    (``CW_TEST_POSTGRES_*``, default 127.0.0.1:5432) when it lets us in, else a cluster of
    the session's own, removed when the session ends."""
    psycopg = required.module("psycopg", PSYCOPG_PIP)
    try:
        psycopg.connect(
            host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, dbname="postgres",
            connect_timeout=3,
        ).close()  # fmt: skip
        return Server(POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER)
    except psycopg.Error:
        pass
    cluster = _new_cluster()
    atexit.register(cluster.remove)
    return Server("127.0.0.1", cluster.port, SERVER_USER)


def _admin_connect() -> object:
    import psycopg

    server = _server()
    return psycopg.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        dbname="postgres",
        autocommit=True,
        connect_timeout=3,
    )


def _database_url(name: str) -> str:
    server = _server()
    return f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{name}"


def _drop_database(name: str) -> None:
    with _admin_connect() as admin:  # type: ignore[attr-defined]
        # FORCE ends connections a failed test left open (PostgreSQL 13+).
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@functools.cache
def _migrated_postgres_template() -> str:
    """A database migrated to the newest revision once per session, for CREATE DATABASE
    ... TEMPLATE: a copy takes a third of the time the migrations take (0.6 s vs 1.3 s)."""
    from campuswatch.collector.db.engine import upgrade

    name = f"cw_template_{secrets.token_hex(6)}"
    with _admin_connect() as admin:  # type: ignore[attr-defined]
        admin.execute(f'CREATE DATABASE "{name}"')
    atexit.register(_drop_database, name)
    upgrade(_database_url(name))  # disposes its engine: a template must have no sessions
    return name


@contextmanager
def temporary_postgres_database(
    prefix: str = "cw_test", *, migrated: bool = False
) -> Iterator[str]:
    """Create a database with a random name, yield its SQLAlchemy URL, drop it afterwards.
    ``migrated``: already at the newest schema revision (a copy of a migrated template)."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    template = f' TEMPLATE "{_migrated_postgres_template()}"' if migrated else ""
    with _admin_connect() as admin:  # type: ignore[attr-defined]
        admin.execute(f'CREATE DATABASE "{name}"{template}')
    try:
        yield _database_url(name)
    finally:
        _drop_database(name)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture
def fresh_migrated_postgres_url() -> Iterator[str]:
    """A database of the test's own, already at the newest schema revision."""
    with temporary_postgres_database(migrated=True) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'register.db'}"


@functools.cache
def _migrated_sqlite_template() -> Path:
    from campuswatch.collector.db.engine import upgrade

    folder = Path(tempfile.mkdtemp(prefix="cw-register-template-"))
    atexit.register(shutil.rmtree, folder, True)
    template = folder / "register.db"
    upgrade(f"sqlite:///{template}")  # disposes its engine: the file is complete on disk
    return template


def migrated_sqlite_url(path: Path) -> str:
    """A SQLite register at ``path`` already at the newest schema revision: a copy of one
    migrated once per session (a copy takes 1 ms, the twelve migrations 0.3–0.5 s)."""
    template = _migrated_sqlite_template()
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    # SQLite removes the WAL when the last connection closes; copied should one remain.
    for suffix in ("-wal", "-shm"):
        side = Path(f"{template}{suffix}")
        if side.exists():
            shutil.copyfile(side, f"{path}{suffix}")
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once per backend; each test gets its own database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'register.db'}"
        return
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``db_url`` already at the newest schema revision, for tests of what runs on it (the
    migrations themselves are tested from empty databases, with ``db_url``)."""
    if request.param == "sqlite":
        yield migrated_sqlite_url(tmp_path / "register.db")
        return
    with temporary_postgres_database(migrated=True) as url:
        yield url


# --- a private cluster the test may stop and start ------------------------------------------

POSTGRES_BIN_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
"""initdb and postgres refuse to run as root; as root we run them as this user."""


def postgres_bin_dir() -> Path | None:
    """Debian's server binaries (initdb, pg_ctl) of the newest major version installed."""
    found = [
        path / "bin"
        for path in POSTGRES_BIN_ROOT.glob("*")
        if path.name.isdigit() and (path / "bin" / "initdb").exists()
    ]
    return max(found, key=lambda path: int(path.parent.name)) if found else None


@dataclass
class PrivatePostgres:
    """One cluster in a temporary folder, trust auth, listening on 127.0.0.1:``port``."""

    bin_dir: Path
    workdir: Path
    port: int
    database: str = "campuswatch"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_file(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = (
                self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            )
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n--- server log ---\n{log}"
            )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-U", SERVER_USER, "-A", "trust",
                  "-E", "UTF8", "--no-sync")  # fmt: skip
        self.start()
        with self.connect("postgres") as admin:  # type: ignore[attr-defined]
            admin.execute(f'CREATE DATABASE "{self.database}"')

    def start(self) -> None:
        # fsync off: a killed server (stop "immediate") keeps what it wrote, since the OS
        # still has it; only a machine crash would lose data, which no test simulates.
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                  "-t", "60", "-o", options, "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends sessions and shuts down cleanly; ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def remove(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def connect(self, database: str | None = None) -> object:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SERVER_USER,
            dbname=database or self.database,
            autocommit=True,
            connect_timeout=3,
        )


def _new_cluster() -> PrivatePostgres:
    """A started cluster in a new temporary folder; the caller removes it."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        required.missing(
            f"no PostgreSQL server binaries under {POSTGRES_BIN_ROOT} (Debian package postgresql)"
        )
    required.module("psycopg", PSYCOPG_PIP)
    if os.geteuid() == 0:
        # initdb and postgres refuse root; the Debian package creates this user.
        required.system_user(SERVER_USER, "postgresql")
    # Not pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    workdir = Path(tempfile.mkdtemp(prefix="cw-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam(SERVER_USER)
        os.chown(workdir, account.pw_uid, account.pw_gid)
    cluster = PrivatePostgres(bin_dir, workdir, free_port())
    try:
        cluster.init()
    except BaseException:
        cluster.remove()
        raise
    return cluster


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = _new_cluster()
    try:
        yield cluster
    finally:
        cluster.remove()
