"""A tracking server that holds many writers: PostgreSQL behind ``mlflow server``.

MLflow's SQLite store serializes every writer behind one file lock; a study that runs many
pairs at once (``run.py --parallel K``, or a cluster) logs to a server with a database
server behind it instead. This module starts one on this machine, for the tests, the load
benchmark and a workstation or head node:

    python -m tracking.server ~/activeit-tracking --port 5000

initializes a PostgreSQL cluster in that folder once (Debian's ``postgresql`` package; as the
``postgres`` user when run as root), starts it on a free local port and ``mlflow server
--backend-store-uri postgresql://...`` on ``--port``, and stops both on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from activeit.errors import ConfigError
from activeit.models.processes import free_port

#: The database MLflow's tables live in.
DATABASE = "mlflow"
#: The PostgreSQL role everything runs as (the superuser initdb makes).
ROLE = "postgres"
#: How long a server has to come up, in seconds.
START_TIMEOUT_S = 240.0


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (``initdb``, ``pg_ctl``): Debian keeps them
    in ``/usr/lib/postgresql/<version>/bin`` (the newest wins), others on the PATH; None when
    PostgreSQL is not installed."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
                    if p.parts[-3].isdigit() else 0)
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _run_as() -> str | None:
    """The user the database runs as: this one, or ``postgres`` for root (PostgreSQL refuses
    root); a ConfigError when root has no such user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(ROLE)
    except KeyError:
        raise ConfigError(f"PostgreSQL does not run as root and this machine has no '{ROLE}' user; "
                          "install Debian's postgresql package (it makes one) or run as another user") from None
    return ROLE


def _command(args: Sequence[str], user: str | None, log: Path | None = None) -> None:
    """Run a PostgreSQL program (as ``user``); a ConfigError with its output when it fails."""
    done = subprocess.run(list(args), user=user, capture_output=True, text=True, cwd="/")
    if log is not None:
        with log.open("a") as out:
            out.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise ConfigError(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-500:]}")


@contextlib.contextmanager
def postgres(folder: Path, port: int | None = None) -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 with its data in ``folder`` (initialized there once,
    trust authentication on loopback only), running until the block ends (then stopped);
    yields the SQLAlchemy URI of its ``mlflow`` database."""
    binaries = postgres_bin()
    if binaries is None:
        raise ConfigError("PostgreSQL is not installed (Debian/Ubuntu: apt-get install postgresql)")
    user = _run_as()
    folder.mkdir(parents=True, exist_ok=True)
    data, log = folder / "data", folder / "postgres.log"
    if user is not None:
        entry = pwd.getpwnam(user)
        _check_reachable(folder, user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    if not (data / "PG_VERSION").exists():
        _command([str(binaries / "initdb"), "-D", str(data), "-U", ROLE, "--auth=trust", "-E", "UTF8",
                  "--no-instructions"], user)
    port = port or free_port()
    # the socket in the data folder: nothing needs /var/run/postgresql; loopback TCP only
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200"
    _command([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t",
              str(int(START_TIMEOUT_S)), "start"], user)
    try:
        uri = f"postgresql://{ROLE}@127.0.0.1:{port}/{DATABASE}"
        listed = subprocess.run([str(binaries / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                 ROLE, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
                                capture_output=True, text=True, user=user, cwd="/")
        if listed.stdout.strip() != "1":
            _command([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", ROLE, DATABASE], user)
        yield uri
    finally:
        subprocess.run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], user=user,
                       capture_output=True, cwd="/")


def _check_reachable(folder: Path, user: str) -> None:
    """A ConfigError when ``user`` cannot pass through a folder above ``folder`` (root's home
    and pytest's temporary folders are closed to others)."""
    for above in folder.resolve().parents:
        if not above.stat().st_mode & 0o001:
            raise ConfigError(f"the '{user}' user that PostgreSQL runs as cannot reach {folder} ({above} is closed "
                              "to other users): put the folder under /tmp or /var/lib, or open that folder")


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait until the MLflow server at ``url`` answers its health check; a ConfigError with
    the end of its log when it exits or does not answer in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        if process.poll() is not None or time.monotonic() > deadline:
            raise ConfigError(f"mlflow server did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(1.0)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, folder: Path, port: int | None = None, workers: int = 2) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 over ``backend_uri`` (its artifacts proxied, stored in
    ``folder/artifacts``, its log in ``folder/mlflow-server.log``), in a session of its own,
    until the block ends; yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = folder / "mlflow-server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers)]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def create_experiments(tracking_uri: str, names: Iterable[str]) -> None:
    """Create each MLflow experiment that does not exist yet, once, before concurrent writers
    start (two writers creating the same experiment at once: one of them fails)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    for name in names:
        if client.get_experiment_by_name(name) is None:
            client.create_experiment(name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracking.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where the database and the artifacts live (kept between starts)")
    parser.add_argument("--port", type=int, default=5000, help="the MLflow server's port (default 5000)")
    parser.add_argument("--workers", type=int, default=2, help="the MLflow server's worker processes (default 2)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    folder = args.folder.expanduser().resolve()
    try:
        with postgres(folder) as database, mlflow_server(database, folder, args.port, args.workers) as url:
            print(f"MLflow at {url} over {database}; set tracking.tracking_uri: {url} (and MLFLOW_TRACKING_TOKEN=none "
                  "for ZenML). Ctrl-C stops both.", flush=True)
            while True:
                time.sleep(3600)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
