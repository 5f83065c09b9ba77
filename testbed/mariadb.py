"""A throwaway ``mariadbd`` for the tests and the benchmark.

Every :class:`MariaDBServer` owns one ``mariadbd`` child process with its own datadir,
unix socket, pid file and error log inside a directory the caller hands in, listening on
a free TCP port on 127.0.0.1. Nothing is read from ``/etc/mysql`` (``--no-defaults``),
and the system service is never touched.

Two bootstrap modes:

* default (``grant_tables=False``): an *empty* datadir plus ``--skip-grant-tables``.
  MariaDB 10.11 creates the InnoDB system tablespace on first start and runs happily
  without the ``mysql`` schema; start-up is a fraction of a second. Any user name with
  any password is accepted and every session has every privilege, so ``read_only`` does
  not stop anybody, and CREATE USER/GRANT fail with error 1290.
* ``grant_tables=True``: the datadir is seeded with ``mariadb-install-db`` (about 1 s)
  and the server enforces privileges. ``root@127.0.0.1`` has an empty password; create
  unprivileged users with :meth:`MariaDBServer.execute` for ``read_only`` and
  access-denied tests.

``tls=MariaDBTls(cert, key, ca, require_secure_transport=True)`` serves TLS with that
certificate (``--ssl-cert/--ssl-key/--ssl-ca``) and, with ``require_secure_transport``,
refuses plaintext TCP connections; :meth:`MariaDBServer.execute` then connects with TLS.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from testbed.servers import (
    HOST,
    LOG_TAIL_LINES,
    find_executable,
    forget_server,
    pick_port,
    spawn_server,
    tail,
)

__all__ = ["MariaDBServer", "MariaDBStartError", "MariaDBTls", "ensure_mariadbd"]

DEFAULT_START_TIMEOUT_S = 30.0
DEFAULT_STOP_TIMEOUT_S = 30.0
_START_ATTEMPTS = 5
_POLL_INTERVAL_S = 0.05
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux
_SEARCH_DIRS = ("/usr/sbin", "/usr/libexec")
_DB_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")

_INSTALL_HINT = (
    "Run `make test` (it calls scripts/ensure-system-deps.sh, which installs the Debian "
    "mariadb-server package) or install it yourself: apt-get install mariadb-server."
)


@dataclass(frozen=True)
class MariaDBTls:
    """The server's TLS: PEM certificate, key and CA; optionally refuse plaintext."""

    cert: Path
    key: Path
    ca: Path
    require_secure_transport: bool = False

    def args(self) -> list[str]:
        args = [f"--ssl-cert={self.cert}", f"--ssl-key={self.key}", f"--ssl-ca={self.ca}"]
        if self.require_secure_transport:
            args.append("--require-secure-transport=ON")
        return args


class MariaDBStartError(RuntimeError):
    """mariadbd did not come up (or died) before the start deadline."""


def ensure_mariadbd() -> str:
    """Return the path to ``mariadbd`` (PATH, /usr/sbin, /usr/libexec) or raise."""
    found = find_executable("mariadbd")
    if found is None:
        raise RuntimeError(
            f"mariadbd not found in PATH or {', '.join(_SEARCH_DIRS)}; the test suite "
            f"needs a real MariaDB server binary. {_INSTALL_HINT}"
        )
    return found


def _find_client() -> str:
    found = find_executable("mariadb", "mysql")
    if found is None:
        raise RuntimeError(f"the mariadb command-line client is not installed. {_INSTALL_HINT}")
    return found


def _read_greeting(port: int, timeout_s: float) -> bytes | None:
    """Return the payload of the server's initial handshake packet, or None."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            header = _recv_exactly(sock, 4)
            length = int.from_bytes(header[:3], "little")
            return _recv_exactly(sock, length)
    except OSError:  # refused, reset, timed out, short read
        return None


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection during the handshake")
        buf += chunk
    return bytes(buf)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class MariaDBServer:
    """One throwaway ``mariadbd`` bound to 127.0.0.1 with everything under ``base_dir``.

    ``extra_args`` are appended after the built-in options, so they win (e.g.
    ``["--max-allowed-packet=64K", "--read-only"]``).
    """

    def __init__(
        self,
        base_dir: Path | str,
        extra_args: Sequence[str] = (),
        *,
        grant_tables: bool = False,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        tls: MariaDBTls | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.datadir = self.base_dir / "data"
        self.tmpdir = self.base_dir / "tmp"
        self.error_log = self.base_dir / "error.log"
        self.stdout_log = self.base_dir / "mariadbd.out"
        self.pid_file = self.base_dir / "mariadbd.pid"
        self.socket_path = self._choose_socket_path()
        self.extra_args: list[str] = list(extra_args)
        self.grant_tables = grant_tables
        self.tls = tls
        self.start_timeout_s = start_timeout_s
        self.mariadbd = ensure_mariadbd()
        self.last_start_duration_s: float | None = None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._paused = False

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server has not been started yet")
        return self._port

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("server is not running")
        return self._proc.pid

    @property
    def host(self) -> str:
        return HOST

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    def url(self, database: str) -> str:
        """SQLAlchemy URL for the asyncmy driver."""
        return f"mysql+asyncmy://root@{HOST}:{self.port}/{database}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start mariadbd and block until it answers ``SELECT 1`` (or raise).

        The first start picks a free port (retrying on a bind race); later starts
        (:meth:`restart`) reuse it.
        """
        if self.running:
            raise RuntimeError(f"mariadbd already running (pid {self.pid})")
        for d in (self.datadir, self.tmpdir):
            d.mkdir(parents=True, exist_ok=True)
        if self.grant_tables and not (self.datadir / "mysql").is_dir():
            self._install_db()

        began = time.monotonic()
        deadline = began + self.start_timeout_s
        pinned = self._port is not None
        attempts = 1 if pinned else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            if not pinned:
                self._port = pick_port()
            log_offset = _file_size(self.error_log)
            self._spawn()
            try:
                self._wait_ready(deadline, log_offset)
            except MariaDBStartError:
                self._reap_failed()
                lost_bind = "Bind on TCP/IP port" in tail(self.error_log, log_offset)
                if lost_bind and attempt < attempts and time.monotonic() < deadline:
                    continue  # somebody grabbed the port between probe and bind
                raise
            except BaseException:
                self._reap_failed()
                raise
            self.last_start_duration_s = time.monotonic() - began
            return

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """SIGTERM (clean shutdown), SIGKILL if it is not gone within ``timeout_s``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            if self._paused:
                # A stopped process does not act on SIGTERM until it is continued.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL, like a crash or OOM kill: next start does InnoDB crash recovery."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._forget()

    def pause(self) -> None:
        """SIGSTOP: connections and queries hang (no errors), like a frozen host."""
        self._signal_and_wait(signal.SIGSTOP, stopped=True)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal_and_wait(signal.SIGCONT, stopped=False)
        self._paused = False

    def restart(self, extra_args: Sequence[str] | None = None) -> None:
        """Clean stop, then start on the same datadir and port.

        ``extra_args``, if given, replaces the caller-supplied options for this and
        later starts.
        """
        self.stop()
        if extra_args is not None:
            self.extra_args = list(extra_args)
        self.start()

    def ensure_running(self) -> None:
        """Undo whatever a test did: resume if paused, start if stopped or killed."""
        if self.running and self._paused:
            self.resume()
        if not self.running:
            self._forget()
            self.start()

    # ------------------------------------------------------------------ SQL helpers

    def client_command(self, *args: str) -> list[str]:
        """The ``mariadb`` CLI connected to this server as root (no option files), plus ``args``."""
        return [
            _find_client(),
            "--no-defaults",
            "--protocol=TCP",
            f"--host={HOST}",
            f"--port={self.port}",
            "--user=root",
            *(["--ssl"] if self.tls is not None else []),
            *args,
        ]

    def execute(self, sql: str, *, database: str | None = None, timeout_s: float = 30.0) -> str:
        """Run SQL through the ``mariadb`` CLI as root; returns tab-separated stdout."""
        cmd = self.client_command(
            "--connect-timeout=5", "--batch", "--skip-column-names", "--execute", sql
        )
        if database is not None:
            cmd.append(database)
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"mariadb client timed out after {timeout_s}s: {sql!r}") from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"mariadb client failed (exit {done.returncode}) for {sql!r}: "
                f"{done.stderr.decode('utf-8', 'replace').strip()}"
            )
        return done.stdout.decode("utf-8", "replace")

    def create_database(self, name: str) -> str:
        """CREATE DATABASE (utf8mb4); fails if it exists. Returns :meth:`url`."""
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"unsafe database name: {name!r}")
        self.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return self.url(name)

    def error_log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.error_log, lines=lines)

    # ------------------------------------------------------------------ internals

    def _choose_socket_path(self) -> Path:
        path = self.base_dir / "mariadbd.sock"
        if len(os.fsencode(path)) <= _SOCKET_PATH_MAX:
            return path
        return Path(tempfile.mkdtemp(prefix="mdb-")) / "mariadbd.sock"

    def _command(self) -> list[str]:
        cmd = [
            self.mariadbd,
            "--no-defaults",  # must come first
            f"--datadir={self.datadir}",
            f"--tmpdir={self.tmpdir}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.error_log}",
            f"--bind-address={HOST}",
            f"--port={self.port}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=256M",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=200",
            # --no-defaults would otherwise leave the compiled-in latin1 default.
            "--character-set-server=utf8mb4",
        ]
        if not self.grant_tables:
            cmd.append("--skip-grant-tables")
        if os.geteuid() == 0:
            cmd.append("--user=root")  # mariadbd refuses to run as root otherwise
        if self.tls is not None:
            cmd.extend(self.tls.args())
        cmd.extend(self.extra_args)
        return cmd

    def _install_db(self) -> None:
        install = find_executable("mariadb-install-db", "mysql_install_db")
        if install is None:
            raise RuntimeError(f"mariadb-install-db not found. {_INSTALL_HINT}")
        cmd = [
            install,
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        log = self.base_dir / "install-db.log"
        with log.open("wb") as out:
            done = subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=self.start_timeout_s,
                check=False,
            )
        if done.returncode != 0:
            raise MariaDBStartError(
                f"mariadb-install-db failed (exit {done.returncode}):\n{tail(log)}"
            )

    def _spawn(self) -> None:
        self._out = self.stdout_log.open("ab")
        try:
            self._proc = spawn_server(self._command(), self._out, self.base_dir)
        except BaseException:
            self._out.close()
            self._out = None
            raise
        self._paused = False

    def _wait_ready(self, deadline: float, log_offset: int) -> None:
        proc = self._proc
        assert proc is not None
        greeted = False
        last_problem = "no handshake yet"
        while True:
            if proc.poll() is not None:
                self._fail(f"mariadbd exited with code {proc.returncode}", log_offset)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(
                    f"mariadbd not ready within {self.start_timeout_s:.0f}s ({last_problem})",
                    log_offset,
                )
            if not greeted:
                greeting = _read_greeting(self.port, min(1.0, remaining))
                if greeting is None:
                    last_problem = "TCP connect/handshake not answered"
                elif greeting[:1] == b"\x0a":  # protocol v10 greeting
                    greeted = True
                    continue
                else:  # 0xFF error packet, e.g. "Too many connections"
                    last_problem = f"handshake error packet {greeting[3:].decode(errors='replace')}"
            else:
                try:
                    # A real query, and proof that the port is *ours*: with a bind race
                    # the greeting could have come from another worker's server.
                    answer = self.execute(
                        "SELECT 1, @@datadir", timeout_s=max(0.5, min(10.0, remaining))
                    )
                except RuntimeError as exc:
                    last_problem = str(exc)
                else:
                    one, _, datadir = answer.strip().partition("\t")
                    if one == "1" and Path(datadir) == self.datadir:
                        return
                    self._fail(
                        f"port {self.port} is answered by another server (datadir {datadir})",
                        log_offset,
                    )
            # Doubles as the poll interval and as an early exit check.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_POLL_INTERVAL_S)

    def _fail(self, reason: str, log_offset: int) -> None:
        raise MariaDBStartError(
            f"{reason}\ncommand: {' '.join(self._command())}\n"
            f"--- tail of {self.error_log} ---\n{tail(self.error_log, log_offset)}\n"
            f"--- tail of {self.stdout_log} ---\n{tail(self.stdout_log)}"
        )

    def _reap_failed(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._forget()

    def _forget(self) -> None:
        if self._proc is not None:
            forget_server(self._proc)
        self._proc = None
        self._paused = False
        if self._out is not None:
            self._out.close()
            self._out = None

    def _signal_and_wait(self, sig: signal.Signals, *, stopped: bool) -> None:
        if not self.running:
            raise RuntimeError("server is not running")
        pid = self.pid
        os.kill(pid, sig)
        # The signal is delivered asynchronously; wait until the kernel reports the
        # process state, so that callers can rely on it right after we return.
        stat = Path(f"/proc/{pid}/stat")
        deadline = time.monotonic() + 5.0
        while stat.exists():
            state = stat.read_text().rpartition(")")[2].split()[0]
            if (state in ("T", "t")) == stopped:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd pid {pid} still in state {state!r} after {sig.name}")
            time.sleep(0.005)  # polling /proc with a deadline
