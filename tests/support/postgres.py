"""PostgreSQL fixtures: a throw-away database on the local server (127.0.0.1:5432, trust auth).

``postgres_url`` is one database per test session; ``fresh_postgres_url`` one per test;
``db_url`` is parametrised over a SQLite file and a fresh PostgreSQL database so register
code is tested on both backends it supports. Without a reachable server the PostgreSQL
cases are skipped with the reason; the SQLite cases still run.

``private_postgres`` is a cluster of the test's own (initdb on a free port) for tests that
stop and start the server: the shared one on 5432 serves every other test and must never
be restarted. It needs Debian's server binaries (package ``postgresql``), else it skips.
"""

from __future__ import annotations

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

from tests.support.ports import free_port

POSTGRES_HOST = os.environ.get("CW_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("CW_TEST_POSTGRES_PORT", "5432"))
POSTGRES_USER = os.environ.get("CW_TEST_POSTGRES_USER", "postgres")


def _admin_connect() -> object:
    import psycopg

    return psycopg.connect(
        host=POSTGRES_HOST,
        port=POSTGRES_PORT,
        user=POSTGRES_USER,
        dbname="postgres",
        autocommit=True,
        connect_timeout=3,
    )


def postgres_unavailable_reason() -> str | None:
    """None when the server answers, else why not (for ``pytest.skip``)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'campuswatch[collector]')"
    try:
        connection = _admin_connect()
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}: {exc}"
    connection.close()  # type: ignore[attr-defined]
    return None


@contextmanager
def temporary_postgres_database(prefix: str = "cw_test") -> Iterator[str]:
    """Create a database with a random name, yield its SQLAlchemy URL, drop it afterwards."""
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    name = f"{prefix}_{secrets.token_hex(6)}"
    with _admin_connect() as admin:  # type: ignore[attr-defined]
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        with _admin_connect() as admin:  # type: ignore[attr-defined]
            # FORCE ends connections a failed test left open (PostgreSQL 13+).
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'register.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once per backend; each test gets its own database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'register.db'}"
        return
    with temporary_postgres_database() as url:
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


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL server binaries under {POSTGRES_BIN_ROOT} (package postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'campuswatch[collector]')")
    # Not pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    workdir = Path(tempfile.mkdtemp(prefix="cw-pg-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(SERVER_USER)
        except KeyError:
            shutil.rmtree(workdir)
            pytest.skip(f"running as root and there is no {SERVER_USER!r} user to run the server")
        os.chown(workdir, account.pw_uid, account.pw_gid)
    cluster = PrivatePostgres(bin_dir, workdir, free_port())
    try:
        cluster.init()
        yield cluster
    finally:
        if cluster.running():
            cluster.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)
