"""Where a search keeps its trials: an Optuna study in an SQL database.

SQLite (one file) is the default; any SQLAlchemy URL works, e.g.
``postgresql://user:password@host/db``, and every process (or machine) that opens the same URL
and study name joins the same search: Optuna's RDB storage hands out trial numbers atomically, so
no trial is run twice. An interrupted search resumes from the same storage, numbering on.

A worker that dies (killed, machine lost) leaves its trial RUNNING. Each worker records a
heartbeat for its running trial; a trial whose heartbeat is older than the grace period is marked
FAIL by the next worker that starts a trial, and Optuna's retry callback
(``RetryHeartbeatStaleTrialCallback``) enqueues it again with the same parameters (Optuna's
"fault-tolerant optimization" guide).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

try:  # Optuna >= 4.9; the older name is deprecated there
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _Retry

    _RETRY_ARG = "heartbeat_stale_trial_callback"
except ImportError:  # pragma: no cover - Optuna 4.0 to 4.8
    from optuna.storages import RetryFailedTrialCallback as _Retry

    _RETRY_ARG = "failed_trial_callback"

from slimkit.errors import SlimkitError

HEARTBEAT_S = 20  # how often a worker says it is alive
GRACE_S = 60  # silence after which its trial is taken to be dead
MAX_RETRY = 2  # a trial that killed its worker twice is not tried a third time
CREATE_ATTEMPTS = 4


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of an SQLite file.

    Example:
        >>> sqlite_url("/tmp/study.db")
        'sqlite:////tmp/study.db'
    """
    return f"sqlite:///{Path(path).resolve()}"


def redact(url: str) -> str:
    """The URL with its password hidden, fit for messages.

    Example:
        >>> redact("postgresql://me:secret@db.example/nas")
        'postgresql://me:***@db.example/nas'
    """
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: show only the scheme, which cannot hold a password
        return url.split("://", 1)[0] + "://..."


def with_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; slimkit's dev extra installs
    psycopg2, so a bare URL uses psycopg2 when only that one is there. Explicit drivers
    (``postgresql+psycopg://``) and other databases are left alone.

    Example:
        >>> with_driver("sqlite:///nas.db")
        'sqlite:///nas.db'
    """
    import importlib.util

    if not url.startswith("postgresql://") or importlib.util.find_spec("psycopg"):
        return url
    if importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    # Bounded waits: a busy SQLite file (several workers) is retried for up to a minute, and an
    # unreachable PostgreSQL server is reported after 10 s instead of hanging.
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {}


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's log lines (per-trial INFO, tracebacks of failed trials: the search reports those
    in one line itself) and experimental-feature warnings off, for this block.

    Example:
        >>> with quiet_optuna():
        ...     inside = optuna.logging.get_verbosity()
        >>> inside == optuna.logging.ERROR
        True
    """
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def open_storage(
    url: str,
    *,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
    max_retry: int = MAX_RETRY,
) -> RDBStorage:
    """Connect to an RDB storage with heartbeats; an unreachable URL is one clear error.

    Example:
        >>> import tempfile
        >>> storage = open_storage(sqlite_url(tempfile.mkdtemp() + "/s.db"))
        >>> type(storage).__name__
        'RDBStorage'
    """
    if heartbeat_s < 1 or grace_s <= heartbeat_s:
        raise SlimkitError(
            f"need heartbeat >= 1 s and grace > heartbeat, got {heartbeat_s}, {grace_s}"
        )
    url = with_driver(url)
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with quiet_optuna():
                return RDBStorage(
                    url,
                    engine_kwargs=_engine_kwargs(url),
                    heartbeat_interval=heartbeat_s,
                    grace_period=grace_s,
                    **{_RETRY_ARG: _Retry(max_retry=max_retry)},
                )
        except Exception as exc:  # SQLAlchemy, a missing driver and Optuna raise their own types
            if _creation_race(exc) and attempt + 1 < CREATE_ATTEMPTS:
                time.sleep(0.5 * (attempt + 1))
                continue
            # Optuna's message for a missing driver hides which one; the cause names it.
            cause = exc.__cause__ if isinstance(exc, ImportError) and exc.__cause__ else exc
            raise SlimkitError(f"cannot open storage {redact(url)}: {_first_line(cause)}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _creation_race(exc: BaseException) -> bool:
    """Two workers that open a new storage together both create its tables; one loses the race
    (a unique-constraint or already-exists error) and simply opens it again."""
    text = str(exc).lower()
    return any(s in text for s in ("unique constraint", "already exists", "duplicate key"))


def open_study(
    storage: RDBStorage | None,
    name: str,
    directions: list[str],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    identity: dict[str, Any],
) -> optuna.Study:
    """Create study ``name``, or join it if it exists (``load_if_exists``).

    ``identity`` (objectives, space, data) is stored with a new study; joining a study made with
    a different one is refused, so two different searches never mix their trials.
    ``storage=None`` keeps the study in memory (nothing to resume or share).

    Example:
        >>> import optuna
        >>> study = open_study(None, "demo", ["maximize"], optuna.samplers.RandomSampler(),
        ...                    optuna.pruners.NopPruner(), {"objectives": ["metric"]})
        >>> study.study_name
        'demo'
    """
    try:
        with quiet_optuna():
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                directions=directions,
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
            stored = study.user_attrs.get("identity")
            if stored is None:
                study.set_user_attr("identity", identity)
    except SlimkitError:
        raise
    except Exception as exc:
        raise SlimkitError(f"cannot open study {name!r}: {_first_line(exc)}") from None
    if stored is not None and stored != identity:
        differs = sorted(k for k in identity if stored.get(k) != identity[k])
        raise SlimkitError(
            f"study {name!r} already exists with a different {', '.join(differs) or 'setting'}; "
            "give a new --study name (or the same settings to join it)"
        )
    return study


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
