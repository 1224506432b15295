"""Private servers for the tests: a PostgreSQL initdb'd into a temporary directory and
redis-server (or valkey-server) with the pgcache module, each on a free port, stopped by
PID. PostgreSQL runs as the ``postgres`` user when the tests run as root."""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import psycopg
import redis

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[3]


def module_path() -> str:
    """The pgcache library the tests load: $PGCACHE_MODULE, else the release build."""
    path = os.environ.get("PGCACHE_MODULE") or str(ROOT / "target/release/libpgcache.so")
    if not Path(path).exists():
        raise RuntimeError(f"{path} does not exist: run cargo build --release (make test does)")
    # Absolute: the server changes into its own directory before it loads modules.
    return str(Path(path).resolve())


def server_binary() -> str:
    """The Redis or Valkey server the tests run: $PGCACHE_TEST_SERVER, else redis-server."""
    return os.environ.get("PGCACHE_TEST_SERVER") or shutil.which("redis-server") or "redis-server"


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Polls ``check`` until it returns something other than None, for at most ``timeout``
    seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


_handed_out: set = set()


def free_port() -> int:
    """A port nothing listens on, below Linux's ephemeral range and never handed out twice
    in this process."""
    while True:
        port = random.randint(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def _pg_bin(tool: str) -> str:
    if os.environ.get("PGCACHE_PG_BIN"):
        return str(Path(os.environ["PGCACHE_PG_BIN"]) / tool)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed: run scripts/setup.sh (make test does)")
    return str(Path(versions[-1]) / tool)


def _as_postgres() -> dict:
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid}


class Postgres:
    """A private PostgreSQL (trust authentication on 127.0.0.1, logical WAL)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pgcache-py-pg-"))
        self.port = free_port()
        owner = _as_postgres()
        if owner:
            os.chown(self.dir, owner["user"], owner["group"])
        subprocess.run(
            [
                _pg_bin("initdb"),
                "-D",
                str(self.dir / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **owner,
        )
        self.process = subprocess.Popen(
            [
                _pg_bin("postgres"),
                "-D",
                str(self.dir / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "wal_level=logical",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "log", "w"),
            **owner,
        )
        wait_for("PostgreSQL to accept connections", self._connects)

    def _connects(self) -> bool | None:
        if self.process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited: {(self.dir / 'log').read_text()}")
        try:
            psycopg.connect(self.conninfo, connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return None

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres"

    @property
    def config(self) -> dict:
        """The ``pg_config`` a user would pass for it."""
        return {"host": "127.0.0.1", "port": self.port, "database": "postgres", "user": "postgres"}

    def execute(self, sql: str) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(sql)

    def stop(self) -> None:
        # Fast shutdown: clients still connected (a Django connection) are ended.
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


class Server:
    """A redis-server (or valkey-server) on a free port, with ``args`` after its own."""

    # Every server started and not stopped: a failed test reports any that went away
    # (conftest's ``pytest_runtest_makereport``).
    running: list[Server] = []

    def __init__(self, args: list[str]) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgcache-py-redis-"))
        self.log = self.dir / "log"
        self.process = subprocess.Popen(
            [
                server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.log),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        Server.running.append(self)
        wait_for("the server to answer PING", self._pings)

    def gone(self, lines: int = 60) -> str | None:
        """If the server exited by itself (a crash, an assertion): its exit status and the
        tail of its log, which is kept (its directory is not removed by ``stop``)."""
        if self.process.poll() is None:
            return None
        tail = self.log.read_text(errors="replace").splitlines()[-lines:]
        return (
            f"the server on port {self.port} exited with status {self.process.returncode}; "
            f"its log ({self.log}) ends:\n" + "\n".join(tail)
        )

    def _pings(self) -> bool | None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the server exited: {self.log.read_text()}")
        try:
            return redis.Redis(port=self.port, socket_timeout=2).ping() or None
        except redis.ConnectionError:
            return None

    def client(self, **options) -> redis.Redis:
        return redis.Redis(port=self.port, **options)

    def stop(self) -> None:
        if self in Server.running:
            Server.running.remove(self)
        if self.process.poll() is not None:
            return  # went away by itself: its log stays for whoever reads the failure
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def pgcache_server(pg: Postgres, *settings: str, server_args: tuple[str, ...] = ()) -> Server:
    """A server with pgcache loaded, reading ``pg``; ``server_args`` are the server's own."""
    return Server(
        [
            "--loadmodule",
            module_path(),
            "pg_host",
            "127.0.0.1",
            "pg_port",
            str(pg.port),
            "pg_database",
            "postgres",
            "pg_user",
            "postgres",
            *settings,
            *server_args,
        ]
    )


def replica_of(pg: Postgres, primary: Server) -> Server:
    """A replica of ``primary`` with pgcache loaded alike, once it has synchronised."""
    replica = pgcache_server(pg, server_args=("--replicaof", "127.0.0.1", str(primary.port)))
    wait_for(
        "the replica to synchronise",
        lambda: replica.client().info("replication").get("master_link_status") == "up" or None,
    )
    return replica


class Cluster:
    """A Redis Cluster (or Valkey cluster) of ``size`` primaries with pgcache loaded, the
    slots shared out evenly."""

    def __init__(self, pg: Postgres, size: int = 3) -> None:
        buses = [free_port() for _ in range(size)]
        self.nodes = [
            pgcache_server(
                pg,
                server_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(bus),
                    "--cluster-node-timeout",
                    "2000",
                ),
            )
            for bus in buses
        ]
        step = 16384 // size
        for i, node in enumerate(self.nodes):
            last = 16383 if i == size - 1 else (i + 1) * step - 1
            node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        for node, bus in zip(self.nodes[1:], buses[1:]):
            self.nodes[0].client().execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
        for node in self.nodes:
            wait_for(
                "the cluster to be ok",
                lambda node=node: (
                    "cluster_state:ok" in (info := self._cluster_info(node))
                    and f"cluster_known_nodes:{size}" in info
                )
                or None,
                timeout=60,
            )

    @staticmethod
    def _cluster_info(node: Server) -> str:
        return redis.Redis(port=node.port, decode_responses=True).execute_command("CLUSTER", "INFO")

    @property
    def port(self) -> int:
        """A node to start from."""
        return self.nodes[0].port

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
