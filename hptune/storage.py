"""Where Optuna keeps a study: SQLite under ``mlruns/`` by default, any RDB URL on request.

RDB storages get Optuna's heartbeat, so a trial left RUNNING by a killed process is marked
failed by the next run once it is stale (with ``fail_reason`` saying so), and its parameters
are queued to run again.

hptune's SQLite files (Optuna's and MLflow's) use the WAL journal with ``synchronous=NORMAL``:
a commit (one per epoch's report, several per trial) then waits for no fsync, and readers do
not block the writer. A killed process loses nothing committed; a power cut may lose the last
commits (SQLite's documented trade-off), never the file.

On SQLite, Optuna's "take a queued trial" (read it WAITING, then mark it RUNNING) is not atomic
across processes: its ``SELECT ... FOR UPDATE`` is ignored and Python's sqlite3 opens the
transaction only at the write, so two processes could take the same queued trial (15 of 300
in a two-process test). hptune's SQLite storage makes that step hold a file lock beside the
database, so each queued trial goes to exactly one process (workers, or separate commands).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import os
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import optuna
from filelock import FileLock
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from hptune.attrs import FAIL_REASON_ATTR
from hptune.errors import HptuneError
from hptune.optuna_private import trial_cache
from hptune.redact import redact

T = TypeVar("T")
DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30  # a trial silent this long belonged to a dead process
MAX_RETRY = 2


def storage_url(configured: str | None) -> str:
    """The storage URL to use: the configured one, or SQLite in ``./mlruns/``."""
    return configured or DEFAULT_STORAGE


BUSY_TIMEOUT_MS = 30_000
_WAL_FILES: set[Path] = set()  # SQLite files whose connections get the pragmas below


def sqlite_file(url: str | None) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other URLs and in-memory SQLite)."""
    if not url or not url.startswith("sqlite:"):
        return None
    database = make_url(url).database
    return None if not database or database == ":memory:" else Path(database).resolve()


def use_wal(url: str | None) -> None:
    """Give this SQLite database's future connections WAL and ``synchronous=NORMAL``."""
    path = sqlite_file(url)
    if path is not None:
        _WAL_FILES.add(path)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    if not _WAL_FILES or not isinstance(connection, sqlite3.Connection):
        return
    files = {Path(row[2]).resolve() for row in connection.execute("PRAGMA database_list") if row[2]}
    if files & _WAL_FILES:
        # Trial writes (a background thread), heartbeats and the driver share these files:
        # a writer waits up to 30 s for another instead of sqlite3's default 5 s.
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA synchronous=NORMAL")
        with contextlib.suppress(sqlite3.OperationalError):  # locked right now: next time
            connection.execute("PRAGMA journal_mode=WAL")


LOCKED_RETRY_PAUSES_S = (0.05, 0.2, 1.0)


def _retried_when_locked(call: Callable[[], T]) -> T:
    """``call()``, again after a pause when SQLite said "database is locked" (Optuna rolled its
    transaction back, so nothing of it was written).

    The busy timeout covers a writer waiting for another, but SQLite also answers "locked" at
    once, without waiting, when a transaction's view of the file went stale (SQLITE_BUSY in WAL
    mode); retrying the transaction is SQLite's remedy. Seen once in CI: two workers stopped at
    the same moment, and one's FAIL state write failed so, leaving its trial RUNNING (whether at
    once or after the busy timeout was not recorded; not reproduced in 3 processes x 300
    enqueue-ask-report-tell rounds).
    """
    for pause in (*LOCKED_RETRY_PAUSES_S, None):
        try:
            return call()
        except optuna.exceptions.StorageInternalError as error:
            cause = error.__cause__
            locked = isinstance(cause, OperationalError) and "database is locked" in str(cause)
            if pause is None or not locked:
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")


def _retried(name: str) -> Callable[..., Any]:
    """The ``RDBStorage`` method ``name`` (looked up at each call, as ``super()`` would)
    through ``_retried_when_locked``."""

    @functools.wraps(getattr(RDBStorage, name))
    def retried(*args: Any, **kwargs: Any) -> Any:
        return _retried_when_locked(lambda: getattr(RDBStorage, name)(*args, **kwargs))

    return retried


class _SQLiteStorage(RDBStorage):
    """Optuna's RDB storage on SQLite: its trial writes are retried when the file is locked
    (``_retried_when_locked``), and its WAITING -> RUNNING step (taking a queued trial) holds a
    file lock beside the database: one process at a time reads and changes the trial's state."""

    def __init__(self, url: str, path: Path, **options: Any) -> None:
        super().__init__(url, **options)
        self._take_lock = FileLock(f"{path}.take.lock")

    create_new_trial = _retried("create_new_trial")
    set_trial_param = _retried("set_trial_param")
    set_trial_intermediate_value = _retried("set_trial_intermediate_value")
    set_trial_user_attr = _retried("set_trial_user_attr")
    set_trial_system_attr = _retried("set_trial_system_attr")
    _set_state = _retried("set_trial_state_values")

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state != TrialState.RUNNING:
            return self._set_state(trial_id, state, values)
        with self._take_lock:
            return self._set_state(trial_id, state, values)


class _RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a stale trial (a WAITING copy of it), without the stale trial's
    ``fail_reason``: the copy is a new attempt, not a failure."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.copy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != FAIL_REASON_ATTR}
        super().__call__(study, trial)


def open_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """Open (creating if needed) an RDB storage with heartbeats and stale-trial retry, behind
    hptune's trial cache (``optuna_private.TrialCache``, where the installed Optuna fits it).

    Args:
        url: the storage's SQLAlchemy URL (in-memory SQLite is refused: the study would
            vanish with the process, and ``continue`` or a worker could never find it).
        create: False to read what is there (``load_existing_study``): an SQLite file that
            does not exist is an error, and no file is made.

    Raises:
        HptuneError: a URL that is not one, in-memory SQLite, a database driver that is not
            installed, or a database that cannot be reached (before anything is written).
    """
    with _database_errors(url, "storage"):
        path = sqlite_file(url)
        if url.startswith("sqlite:") and path is None:
            raise HptuneError(
                f"storage: {url} is an in-memory database: the study would vanish when this"
                " command ends; name a file, e.g. sqlite:///mlruns/optuna.db"
            )
        if not create and path is not None and not path.exists():
            raise HptuneError(f"no study storage at {path} (storage {redact(url)})")
        return _open_storage(url, create)


def load_existing_study(study_name: str, url: str) -> optuna.Study:
    """The stored study, without creating a database or a study that is not there (for
    ``hptune status``, ``replay`` and ``export-report``).

    Raises:
        HptuneError: no such database file, or no study of that name in it (the error lists
            the studies there).
    """
    opened = open_storage(url, create=False)
    try:
        return optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
        raise HptuneError(
            f"no study named {study_name!r} in {redact(url)}; "
            f"studies there: {', '.join(names) or 'none'}"
        ) from None


def check_writable(url: str | None, what: str) -> None:
    """Raise ``HptuneError`` when an SQLite store cannot be written (a read-only file system,
    a read-only file), before anything is written: SQLite opens such a file for reading and
    fails only at the first write, after a study started. Other URLs: left to their servers."""
    path = sqlite_file(url)
    if path is None:
        return
    if path.exists():
        reason = _write_refused(path)
    else:
        folder = next(p for p in path.parents if p.exists())
        # (As root, only a read-only file system says no.)
        reason = None if os.access(folder, os.W_OK) else f"{folder} cannot be written"
    if reason is not None:
        raise HptuneError(
            f"{what}: {redact(str(url))} cannot be written ({reason}); copy it to a folder that"
            " can, or name another"
        )


def _write_refused(path: Path) -> str | None:
    """Why SQLite refuses to write ``path``: a write is tried, and rolled back."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("CREATE TABLE hptune_write_probe (x)")
        connection.execute("ROLLBACK")
    except sqlite3.Error as error:
        return str(error)
    finally:
        connection.close()
    return None


DATABASE_SERVERS = ("postgresql", "mysql", "mssql")  # the servers MLflow's SQL store runs on


def check_database(url: str, what: str) -> None:
    """Connect once to the database server of ``url``, so that a wrong URL is an error before
    anything is written. Other URLs (SQLite, folders, ``file:``, ``databricks://``) are left
    alone.

    Raises:
        HptuneError: the driver is not installed, or the server cannot be reached (in 10 s).
    """
    from sqlalchemy import create_engine

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # not a database URL (a folder)
    if parsed.get_backend_name() not in DATABASE_SERVERS:
        return
    with _database_errors(url, what):
        options = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
        engine = create_engine(url, connect_args=options)
        try:
            engine.connect().close()
        finally:
            engine.dispose()


@contextlib.contextmanager
def _database_errors(url: str, what: str) -> Iterator[None]:
    """SQLAlchemy's (and Optuna's) errors on opening ``url`` as one-line ``HptuneError``s."""
    try:
        yield
    except ArgumentError as error:
        raise HptuneError(f"{what}: {redact(url)} is not a database URL ({error})") from None
    except ImportError as error:  # SQLAlchemy imports a URL's driver when it first connects
        cause = error.__cause__ if isinstance(error.__cause__, ImportError) else error
        hint = ""
        if make_url(url).get_backend_name() == "postgresql":
            hint = "; for PostgreSQL: pip install 'hptune[postgres]', URL postgresql+psycopg://..."
        raise HptuneError(
            f"{what}: {redact(url)} needs the database driver {cause.name or 'for it'}, which is"
            f" not installed{hint}"
        ) from None
    except OperationalError as error:
        reason = str(error.orig or error).strip().splitlines()[0]
        raise HptuneError(f"{what}: cannot open {redact(url)}: {reason}") from None


def _open_storage(url: str, create: bool) -> optuna.storages.BaseStorage:
    path = sqlite_file(url)
    # A new database is set up by one process at a time; a reader finds it set up.
    setup = database_lock(url, "setup") if create else contextlib.nullcontext()
    with warnings.catch_warnings():
        # Heartbeats have been "experimental" since Optuna 2.8; they are what resume relies on.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        options: dict[str, Any] = {
            "heartbeat_interval": HEARTBEAT_INTERVAL_S,
            "grace_period": GRACE_PERIOD_S,
            "heartbeat_stale_trial_callback": _RetryStaleTrial(max_retry=MAX_RETRY),
        }
        if path is None:
            with setup:
                return trial_cache(RDBStorage(url, **options))  # servers lock the trial's row
        path.parent.mkdir(parents=True, exist_ok=True)
        use_wal(url)
        with setup:
            return trial_cache(_SQLiteStorage(url, path, **options))


def enqueue_lock(url: str, study_name: str) -> contextlib.AbstractContextManager[None]:
    """One process at a time enqueues the rows of a study's table (``grid.enqueue_table``), so
    that commands started at the same instant (on one machine or several, e.g. a job array)
    queue each row once: the next one sees the rows already queued."""
    return database_lock(url, "enqueue", study_name)


@contextlib.contextmanager
def database_lock(url: str, purpose: str, key: str = "") -> Iterator[None]:
    """Hold a lock that every process opening ``url`` for the same ``purpose`` (and ``key``)
    waits for: commands started at the same instant take turns. ``setup`` guards a database's
    first set-up (Optuna's and MLflow's create their tables when they find none: two at once
    collide, "table studies already exists", and may leave the schema half made); ``study``
    guards creating a study and its parent run; ``enqueue`` guards queuing a table's rows.

    SQLite: a file lock beside the database (``optuna.db.setup.lock``; ``key`` is not part of
    its name, all keys share it); PostgreSQL: an advisory lock named after purpose and key;
    other URLs: none (their servers' own transactions are all there is).
    """
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.{purpose}.lock"):
            yield
        return
    if not url.startswith("postgresql"):
        yield
        return
    from sqlalchemy import create_engine, text

    digest = hashlib.sha256(f"hptune.{purpose}:{key}".encode()).digest()
    lock = {"key": int.from_bytes(digest[:8], "big", signed=True)}
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), lock)
            connection.commit()  # (nothing to keep: the lock is the session's)
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), lock)
                connection.commit()
    finally:
        engine.dispose()
