"""The Optuna internals hptune uses, each with the public behaviour it replaces, a probe and a
fallback; nothing else in hptune touches an underscore-named Optuna symbol.

Optuna promises nothing about its private code: a release may rename or change any of it. So
each internal is probed once before it is relied on, and every use is guarded: if the probe
fails, or a use raises, hptune takes the public way for the rest of the process and says so in
one ``FallbackWarning`` naming the internal and the reason. A changed internal can cost speed,
never a trial or a study.

The internals (docs/compatibility.md lists them too):

``optuna.storages._cached_storage._CachedStorage``, subclassed by ``TrialCache``, with its
``_read_trials_from_remote_storage``, ``_add_trials_to_cache``, ``_studies`` and ``_lock``, the
``unfinished_trial_ids`` of its study records and ``FrozenTrial._trial_id``.
    Replaces: Optuna's own cache in front of an ``RDBStorage`` (what ``optuna.load_study``
    puts in front of one).
    Gains: with ``batch_trials: K``, the unfinished trials are read once per epoch instead of
    once per member's pruning decision, and an ask reads the queued trials only.
    Fallback: the plain ``RDBStorage`` (Optuna puts its own cache in front of it): the same
    trials and results, with more database reads.

``_get_stale_trial_ids`` of the same class, overridden by ``TrialCache``.
    Replaces: nothing public gives a stale trial's reason a place: Optuna fails the trials it
    returns (``optuna.storages.fail_stale_trials``) and then stores no attribute on them.
    Gains: a trial whose process died (``kill -9``) says so in Optuna (``fail_reason``).
    Fallback: the plain storage above; stale trials then fail without that reason in Optuna
    (their MLflow runs still say why).

Replaced by public calls (no longer used): ``Study._storage`` (heartbeats go through a storage
hptune opens from the study's URL; ``trials_snapshot`` covers every ``TrialCache`` of the
thread) and ``Trial._trial_id`` (``get_trial_id_from_study_id_trial_number``).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import threading
import warnings
from collections.abc import Container, Iterator
from typing import TYPE_CHECKING, Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hptune.attrs import FAIL_REASON_ATTR, STALE

CACHED_STORAGE = "optuna.storages._cached_storage._CachedStorage"
CACHE_FALLBACK = (
    "using Optuna's own trial cache instead: the same trials and results, with more database"
    " reads when batch_trials > 1"
)


class FallbackWarning(RuntimeWarning):
    """A library's internal that hptune uses has changed: hptune took the public way."""


_fallen_back: set[str] = set()


def usable(name: str) -> bool:
    """Whether the internal ``name`` is still used in this process (no fallback yet)."""
    return name not in _fallen_back


def fall_back(name: str, reason: BaseException | str, fallback: str) -> None:
    """Take the public way for the internal ``name`` for the rest of this process, with one
    warning (the first time) that names it, the reason and what is used instead."""
    if name in _fallen_back:
        return
    _fallen_back.add(name)
    if isinstance(reason, BaseException):
        reason = f"{type(reason).__name__}: {reason}"
    message = f"hptune: Optuna's {name} is not usable ({reason}); {fallback}"
    warnings.warn(message, FallbackWarning, stacklevel=3)


def _cache_base() -> type[BaseStorage]:
    """Optuna's ``_CachedStorage``; ``BaseStorage`` where it is gone (``TrialCache`` is then
    never made: ``cache_problem`` says so first)."""
    try:
        module = importlib.import_module("optuna.storages._cached_storage")
    except ImportError:
        return BaseStorage
    base = getattr(module, "_CachedStorage", None)
    return base if isinstance(base, type) and issubclass(base, BaseStorage) else BaseStorage


if TYPE_CHECKING:
    from optuna.storages._cached_storage import _CachedStorage as _OptunaCache
else:
    _OptunaCache = _cache_base()

# The methods TrialCache calls or overrides, with the parameters it relies on.
_CACHE_METHODS = {
    "__init__": ["self", "backend"],
    "get_all_trials": ["self", "study_id", "deepcopy", "states"],
    "_read_trials_from_remote_storage": ["self", "study_id"],
    "_add_trials_to_cache": ["self", "study_id", "trials"],
    "_get_stale_trial_ids": ["self", "study_id"],
}


def cache_problem() -> str | None:
    """Why ``TrialCache`` does not fit the installed Optuna; None when it does."""
    try:
        module = importlib.import_module("optuna.storages._cached_storage")
    except ImportError as error:
        return f"ImportError: {error}"
    current = getattr(module, "_CachedStorage", None)
    if current is None:
        return "not found"
    if current is not _OptunaCache:
        return "not the class hptune's TrialCache was built on"
    for name, expected in _CACHE_METHODS.items():
        method = getattr(current, name, None)
        if method is None:
            return f"its method {name} was not found"
        found = list(inspect.signature(method).parameters)
        if found != expected:
            return f"{name} takes ({', '.join(found)}), not ({', '.join(expected)})"
    if "_read_trials_from_remote_storage" not in current.get_all_trials.__code__.co_names:
        return "get_all_trials no longer reads through _read_trials_from_remote_storage"
    if "_trial_id" not in FrozenTrial.__init__.__code__.co_names:
        return "FrozenTrial no longer keeps _trial_id"
    return None


def trial_cache(backend: RDBStorage) -> BaseStorage:
    """``backend`` behind hptune's ``TrialCache``; where Optuna's internals differ, ``backend``
    itself (Optuna then puts its own cache in front of it), with a ``FallbackWarning``."""
    if not usable(CACHED_STORAGE):
        return backend
    problem: BaseException | str | None = cache_problem()
    if problem is None:
        try:
            cache = TrialCache(backend)
            with cache._lock:  # what TrialCache reads of Optuna's cache, there and usable
                if not isinstance(cache._studies, dict):
                    raise TypeError(f"_studies is a {type(cache._studies).__name__}, not a dict")
            return cache
        except Exception as error:
            problem = error
    fall_back(CACHED_STORAGE, problem, CACHE_FALLBACK)
    return backend


_snapshot = threading.local()  # .reads: {(id(cache), study_id)} read in this thread's snapshot


@contextlib.contextmanager
def trials_snapshot() -> Iterator[None]:
    """In this block (in this thread), each ``TrialCache`` reads each study's trials from the
    database at most once; nothing changes for other storages. Nested blocks are one."""
    if getattr(_snapshot, "reads", None) is not None:
        yield
        return
    _snapshot.reads = set()
    try:
        yield
    finally:
        _snapshot.reads = None


class TrialCache(_OptunaCache):
    """The trial cache Optuna puts in front of any RDB storage, with snapshots.

    Optuna's cache keeps finished trials, but every bulk read (``study.get_trials``; each ask,
    each sampler and pruner call) reads every unfinished trial from the database again, with
    its params, attributes and reported values. With ``batch_trials: K``, K members are
    unfinished together and each of the K pruning decisions after an epoch reads all of them:
    K^2 trial reads per epoch (64 members: 4,096). Inside ``trials_snapshot()``, the first bulk
    read of a study refreshes the cache and later ones reuse it, so the decisions of one epoch
    read the members once. They then see the study as it was at that first read (plus each
    member's own latest values, which ``Trial.should_prune`` reads directly); trials that other
    processes finish meanwhile count from the next epoch on, as with any concurrent trial.

    An ask first looks for queued trials (``states=(WAITING,)``): that reads the queued trials
    only, not every unfinished one, which made K asks in a row read the running members K times
    over. What it reads joins the cache as unfinished, so the next bulk read refreshes it.
    """

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self.backend = backend  # (Optuna's own reference to it is private)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if states != (TrialState.WAITING,) or not usable(CACHED_STORAGE):
            return super().get_all_trials(study_id, deepcopy, states)
        # What Study.ask looks for first: the queued trials, read fresh, and no other.
        queued = self.backend.get_all_trials(study_id, deepcopy=False, states=states)
        if not self._cache_queued(study_id, queued):
            return super().get_all_trials(study_id, deepcopy, states)
        return copy.deepcopy(queued) if deepcopy else queued

    def _cache_queued(self, study_id: int, queued: list[FrozenTrial]) -> bool:
        """Put the queued trials just read into the cache as unfinished (the ask then sets their
        params through it). False when the study is not cached yet, or when Optuna's internals
        differ (then the fallback, for good).

        Their ids join the unfinished ones before the trials join the cache, so that a failure
        half-way leaves nothing stale: the next bulk read refreshes every one of them."""
        try:
            with self._lock:
                record: Any = self._studies.get(study_id)
                if record is None:
                    return False
                unfinished = record.unfinished_trial_ids
                unfinished.update([trial._trial_id for trial in queued])
                self._add_trials_to_cache(study_id, queued)
            return True
        except Exception as error:
            fall_back(CACHED_STORAGE, error, CACHE_FALLBACK)
            return False

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        reads: set[tuple[int, int]] | None = getattr(_snapshot, "reads", None)
        key = (id(self), study_id)
        if reads is not None and key in reads and usable(CACHED_STORAGE):
            return
        super()._read_trials_from_remote_storage(study_id)
        if reads is not None:
            reads.add(key)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """The trials whose process stopped sending heartbeats, each given its reason
        (``attrs.STALE``) before ``optuna.storages.fail_stale_trials`` fails them."""
        stale = super()._get_stale_trial_ids(study_id)
        try:
            for trial_id in stale:
                with contextlib.suppress(UpdateFinishedTrialError):
                    self.backend.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, STALE)
        except Exception as error:
            fall_back(CACHED_STORAGE, error, CACHE_FALLBACK)
        return stale
