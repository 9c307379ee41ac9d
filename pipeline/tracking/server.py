"""A shared MLflow tracking server: `mlflow server` on a PostgreSQL backend store with an artifact root.

    make tracking-server                      # or: .venv/bin/python -m pipeline.tracking.server

The backend store is `TRACKING_DB_URI` (postgresql://user:password@host:port/database) when it is set;
otherwise a local PostgreSQL is brought up in `TRACKING_PG_DIR` (`initdb` once, then `pg_ctl start` on a
free loopback port, with a generated password kept beside the cluster) for a team without a database
server, and stopped again when the tracking server stops. Artifacts are proxied by the server
(`--serve-artifacts`) and stored under `TRACKING_ARTIFACTS` (a directory, or an object-store URI such as
s3://bucket/path), so clients need no access to the artifact store. Clients point at it with
`MLFLOW_TRACKING_URI=http://HOST:PORT`.

The database URI is read from the environment only, never from the command line (where `ps` would show
it), and is handed to `mlflow server` through its environment (`MLFLOW_BACKEND_STORE_URI`). Whatever is
printed shows it with the password masked (`mask_uri`).

This module imports nothing from the rest of the package: it runs the `mlflow` and PostgreSQL programs.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

DEFAULT_PG_DIR = ".tracking/postgres"
DEFAULT_ARTIFACTS = ".tracking/artifacts"
DEFAULT_PORT = 5000
DEFAULT_WORKERS = 2  # uvicorn workers (MLflow's default is 4; these machines have 2 cores)
SERVER_READY_S = 180  # the first start creates the MLflow schema in the database
PG_READY_S = 60
SERVICE_USERS = ("postgres", "nobody")  # PostgreSQL refuses to run as root: as root, run it as one of these


class TrackingServerError(RuntimeError):
    """The database or the tracking server could not be brought up (the message says why)."""


_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&#]*)", re.IGNORECASE)


def mask_uri(uri: str) -> str:
    """The URI with its password (user info or a `password=` query parameter) replaced by ***.

    The user info ends at the last `@` before the query, so a password holding an unescaped `@` or `/`
    is masked whole (a database name holding `@` is masked too: more is hidden, never less)."""
    start = uri.find("://")
    if start != -1:
        start += 3
        query = uri.find("?", start)
        at = uri.rfind("@", start, query if query != -1 else len(uri))
        colon = uri.find(":", start, at) if at != -1 else -1
        if colon != -1:
            uri = uri[: colon + 1] + "***" + uri[at:]
    return _QUERY_PASSWORD.sub(lambda m: m["head"] + "***", uri)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name)) or (0,)


def find_pg_bin(environ: dict[str, str] | None = None) -> Path | None:
    """The directory holding `initdb` and `pg_ctl`: `PG_BIN`, else the PATH, else Debian's
    /usr/lib/postgresql/<version>/bin (the package does not put them on the PATH), newest first."""
    environ = os.environ if environ is None else environ
    candidates: list[Path] = []
    if environ.get("PG_BIN"):
        candidates.append(Path(environ["PG_BIN"]))
    on_path = shutil.which("initdb", path=environ.get("PATH"))
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key, reverse=True)
    candidates.extend(path.parent for path in debian)
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _service_account() -> tuple[str, str] | None:
    """(user, group) to run PostgreSQL as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    import grp
    import pwd

    for name in SERVICE_USERS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name
    raise TrackingServerError(
        "running as root, and PostgreSQL refuses to run as root: no `postgres` (or `nobody`) user to run it as"
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster of its own in `root` (root/data, root/password, root/postgres.log), listening on
    127.0.0.1 only, with password authentication (scram-sha-256) for one user and one database.

    `start()` runs `initdb` the first time (with a generated password, written to root/password, mode
    0600), then `pg_ctl start` on `port` (a free one when None) and creates the database if it is missing;
    `stop()` runs `pg_ctl stop`. As root, the cluster belongs to and runs as the `postgres` user. `durable=False`
    (throwaway clusters, tests) turns off fsync: a crash may lose the data."""

    root: Path
    port: int | None = None
    user: str = "mlflow"
    database: str = "mlflow"
    durable: bool = True
    pg_bin: Path | None = None
    _password: str | None = field(default=None, repr=False)
    _started: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.pg_bin = self.pg_bin or find_pg_bin()
        if self.pg_bin is None:
            raise TrackingServerError(
                "PostgreSQL server programs (initdb, pg_ctl) not found: install Debian's `postgresql` package "
                "(apt-get install postgresql) or set PG_BIN to their directory"
            )

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def uri(self) -> str:
        """postgresql://user:password@127.0.0.1:port/database (mask it before showing it: `mask_uri`)."""
        if self.port is None or self._password is None:
            raise TrackingServerError("the local PostgreSQL is not started")
        return f"postgresql://{quote(self.user)}:{quote(self._password, safe='')}@127.0.0.1:{self.port}/{quote(self.database)}"

    def _run(self, args: list[str], account, **kwargs) -> subprocess.CompletedProcess:
        user, group = account or (None, None)
        return subprocess.run(
            args, user=user, group=group, cwd=self.root, capture_output=True, text=True, check=False, **kwargs
        )

    def _prepare(self, account) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if account:
            # the service user must reach root/ (and its parents) but needs no access to the password file
            os.chmod(self.root, 0o711)
            probe = self._run(["test", "-x", str(self.root)], account)
            if probe.returncode != 0:
                raise TrackingServerError(
                    f"{self.root}: the `{account[0]}` user that runs PostgreSQL cannot reach this directory "
                    "(a parent directory is private); choose one it can reach, e.g. under /tmp or /var/lib"
                )
        if (self.data_dir / "PG_VERSION").is_file():
            if not self.password_file.is_file():
                raise TrackingServerError(f"{self.data_dir} exists but {self.password_file} is missing")
            self._password = self.password_file.read_text(encoding="utf-8").strip()
            return
        self._password = secrets.token_urlsafe(24)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.data_dir.parent / ".initdb-password"
        pwfile.touch(mode=0o600)
        pwfile.write_text(self._password + "\n", encoding="utf-8")
        if account:
            shutil.chown(self.data_dir, *account)
            shutil.chown(pwfile, *account)
        try:
            args = [str(self.pg_bin / "initdb"), "-D", str(self.data_dir), "-U", self.user, f"--pwfile={pwfile}",
                    "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"]
            if not self.durable:
                args.append("--no-sync")
            done = self._run(args, account)
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise TrackingServerError(f"initdb failed ({done.returncode}):\n{done.stderr.strip() or done.stdout.strip()}")
        settings = ["listen_addresses = '127.0.0.1'", "unix_socket_directories = ''"]
        if not self.durable:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# buyer-intent tracking server\n" + "\n".join(settings) + "\n")
        self.password_file.touch(mode=0o600)
        self.password_file.write_text(self._password + "\n", encoding="utf-8")

    def start(self) -> "LocalPostgres":
        account = _service_account()
        self._prepare(account)
        self.port = self.port or free_port()
        self.log_file.touch()
        if account:
            shutil.chown(self.log_file, *account)
        done = self._run(
            [str(self.pg_bin / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", str(PG_READY_S),
             "-o", f"-p {self.port}", "start"],
            account,
        )
        if done.returncode != 0:
            raise TrackingServerError(
                f"pg_ctl start failed ({done.returncode}) on port {self.port}:\n{done.stderr.strip()}\n{_tail(self.log_file)}"
            )
        self._started = True
        try:
            self._create_database()
        except Exception:
            self.stop()
            raise
        return self

    def _create_database(self) -> None:
        import psycopg2  # the `tracking` dependency group; mlflow needs it for postgresql:// too

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self._password, dbname="postgres", connect_timeout=10
        )
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            connection.close()

    def stop(self) -> None:
        if not self._started:
            return
        done = self._run([str(self.pg_bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], _service_account())
        self._started = False
        if done.returncode != 0:
            raise TrackingServerError(f"pg_ctl stop failed ({done.returncode}):\n{done.stderr.strip()}")

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def server_command(
    artifacts: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT, workers: int = DEFAULT_WORKERS,
    allowed_hosts: str | None = None,
) -> list[str]:
    """`mlflow server` arguments; the backend store goes through the environment (`server_env`)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    args = [str(mlflow) if mlflow.exists() else "mlflow", "server", "--serve-artifacts",
            "--artifacts-destination", artifacts, "--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts:
        args += ["--allowed-hosts", allowed_hosts]
    return args


def sqlalchemy_uri(uri: str) -> str:
    """A bare postgresql:// URI names SQLAlchemy's default PostgreSQL driver, which is psycopg (3) since
    SQLAlchemy 2.1; the project ships psycopg2 (dependency group `tracking`), so name it unless psycopg is
    installed. A URI that names its driver (postgresql+DRIVER://) is kept."""
    match = re.match(r"^(postgresql|postgres)://", uri)
    if not match:
        return uri
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "postgresql+psycopg2://" + uri[match.end() :]
    return "postgresql://" + uri[match.end() :]


def server_env(backend_uri: str, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.pop("MLFLOW_TRACKING_URI", None)  # the server's own store is the backend below, not another server
    env["MLFLOW_BACKEND_STORE_URI"] = sqlalchemy_uri(backend_uri)
    return env


def artifacts_destination(value: str) -> str:
    """A directory (made absolute, created) or an object-store URI, as given."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value):
        return value
    path = Path(value).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


@dataclass
class TrackingServer:
    """`mlflow server` in its own process group; `start()` returns when /health answers OK."""

    backend_uri: str
    artifacts: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = DEFAULT_WORKERS
    allowed_hosts: str | None = None
    log_file: Path | None = None  # None: the server writes to this process's stdout and stderr
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = SERVER_READY_S) -> "TrackingServer":
        if not self.backend_uri.startswith(("postgresql://", "postgresql+", "postgres://")):
            raise TrackingServerError(f"the backend store must be a postgresql:// URI, got {mask_uri(self.backend_uri)!r}")
        output = open(self.log_file, "ab") if self.log_file else None
        try:
            self.process = subprocess.Popen(
                server_command(self.artifacts, self.host, self.port, self.workers, self.allowed_hosts),
                env=server_env(self.backend_uri), stdout=output, stderr=subprocess.STDOUT if output else None,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            if output:
                output.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                detail = f":\n{mask_uri(_tail(self.log_file))}" if self.log_file else ""
                raise TrackingServerError(f"mlflow server exited with {self.process.returncode} before it was ready{detail}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TrackingServerError(f"mlflow server not ready on {self.url} within {timeout_s:.0f} s")

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM to the server's process group (the workers too), SIGKILL after `grace_s`."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> "TrackingServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.tracking.server",
        description="Start mlflow server on a PostgreSQL backend store (TRACKING_DB_URI, else a local PostgreSQL "
        "in --pg-dir) with proxied artifacts. The database URI is read from TRACKING_DB_URI only, never from the "
        "command line.",
    )
    parser.add_argument("--artifacts", default=env.get("TRACKING_ARTIFACTS") or DEFAULT_ARTIFACTS,
                        help="artifact root: a directory or an object-store URI (TRACKING_ARTIFACTS; default %(default)s)")
    parser.add_argument("--host", default=env.get("TRACKING_HOST") or "127.0.0.1",
                        help="interface to bind (TRACKING_HOST; 0.0.0.0 for a team, with --allowed-hosts)")
    parser.add_argument("--port", type=int, default=int(env.get("TRACKING_PORT") or DEFAULT_PORT), help="TRACKING_PORT")
    parser.add_argument("--workers", type=int, default=int(env.get("TRACKING_WORKERS") or DEFAULT_WORKERS), help="TRACKING_WORKERS")
    parser.add_argument("--allowed-hosts", default=env.get("TRACKING_ALLOWED_HOSTS") or None,
                        help="Host headers the server accepts beyond localhost and private IPs (TRACKING_ALLOWED_HOSTS)")
    parser.add_argument("--pg-dir", default=env.get("TRACKING_PG_DIR") or DEFAULT_PG_DIR,
                        help="without TRACKING_DB_URI: the local PostgreSQL's directory (TRACKING_PG_DIR; default %(default)s)")
    parser.add_argument("--pg-port", type=int, default=int(env["TRACKING_PG_PORT"]) if env.get("TRACKING_PG_PORT") else None,
                        help="without TRACKING_DB_URI: the local PostgreSQL's loopback port (TRACKING_PG_PORT; default: a free one)")
    args = parser.parse_args(argv)

    postgres = None
    server = None
    stopping = False

    def _terminate(signum, frame):  # SIGTERM: stop like Ctrl-C, so the database is shut down too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        backend = env.get("TRACKING_DB_URI")
        if not backend:
            postgres = LocalPostgres(Path(args.pg_dir), port=args.pg_port).start()
            backend = postgres.uri
            print(f"local PostgreSQL: {postgres.data_dir} on 127.0.0.1:{postgres.port} (log {postgres.log_file})", flush=True)
        server = TrackingServer(backend, artifacts_destination(args.artifacts), args.host, args.port, args.workers,
                                args.allowed_hosts)
        print(f"backend store: {mask_uri(backend)}\nartifacts: {server.artifacts}\nstarting mlflow server ...", flush=True)
        server.start()
        print(f"MLflow tracking server on {server.url} (Ctrl-C stops it)\n"
              f"clients: export MLFLOW_TRACKING_URI={server.url}", flush=True)
        server.process.wait()
        if not stopping:
            print(f"mlflow server exited with {server.process.returncode if server.process else '?'}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        stopping = True
    except TrackingServerError as exc:
        print(f"error: {mask_uri(str(exc))}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if server is not None:
            server.stop()
        if postgres is not None:
            postgres.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
