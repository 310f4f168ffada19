"""The one place that opens and closes what a command works with: store, engine, locks."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from snapvol import locking
from snapvol.adapters.restic import Repository, Restic
from snapvol.errors import StoreError
from snapvol.monitor.settings import Monitoring
from snapvol.output import Console

if TYPE_CHECKING:  # imported where used: `copy` starts restic before the store is imported
    from snapvol.adapters.engine import Engine
    from snapvol.adapters.store import Store
    from snapvol.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])


def data_dir() -> Path:
    """Where the store lives unless told otherwise, whatever the current directory:
    /var/lib/snapvol for root (as pgBackRest's /var/lib/pgbackrest), else
    $XDG_DATA_HOME/snapvol (~/.local/share/snapvol)."""
    if os.geteuid() == 0:
        return Path("/var/lib/snapvol")
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "snapvol"


@dataclass
class AppContext:
    db: Path
    backup_dir: Path
    debug: bool
    console: Console
    # The restic repository for copies (--repo / SNAPVOL_REPOSITORY) and its password file:
    # the location may hold credentials, so it is never printed (see ``Repository.display``).
    repo: str | None = dataclasses.field(default=None, repr=False)
    password_file: Path | None = None
    monitoring: Monitoring = dataclasses.field(default_factory=Monitoring)
    # What the run found wrong without failing (a suspect snapshot): notified like a failure.
    alerts: list[str] = dataclasses.field(default_factory=list)
    # The global options as given (for ``override``): the location may hold credentials.
    given: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_options(
        cls,
        db: Path | None,
        backup_dir: Path | None,
        debug: bool,
        repo: str | None = None,
        password_file: Path | None = None,
        metrics_file: Path | None = None,
        notify_config: Path | None = None,
        notify_success: bool = False,
    ) -> AppContext:
        given_db, given_backup_dir = db, backup_dir
        # Absolute from the start: the store does not move with the current directory, and the
        # default backup directory goes with the store (a copied store and backups/ stay a pair).
        db = (db or data_dir() / "manifests.db").absolute()
        backup_dir = (backup_dir or db.parent / "backups").absolute()
        return cls(
            db=db,
            backup_dir=backup_dir,
            debug=debug,
            console=Console(),
            repo=repo,
            password_file=password_file,
            monitoring=Monitoring(
                metrics_file.absolute() if metrics_file else None,
                notify_config.absolute() if notify_config else None,
                notify_success,
            ),
            given={
                "db": given_db,
                "backup_dir": given_backup_dir,
                "debug": debug,
                "repo": repo,
                "password_file": password_file,
                "metrics_file": metrics_file,
                "notify_config": notify_config,
                "notify_success": notify_success,
            },
        )

    def override(self, **later: Any) -> None:
        """Global options given after the command's name: they win over those given before it
        (and the SNAPVOL_* variables); a store named there brings its own backup directory
        unless one is given too."""
        fresh = AppContext.from_options(**{**self.given, **later})
        for f in dataclasses.fields(self):
            if f.name not in ("console", "alerts"):
                setattr(self, f.name, getattr(fresh, f.name))

    def restic(self) -> Restic:
        """The repository given by --repo / SNAPVOL_REPOSITORY, ready to run restic on.

        UsageError when none is given, or its password is not to be had (see
        ``Repository.configure``: restic's own RESTIC_PASSWORD* variables are honoured)."""
        return Restic(Repository.configure(self.repo, self.password_file))

    def command(self, *args: str) -> str:
        """``snapvol ARGS`` as a shell command that reaches this store and backup directory
        from anywhere: the global options appear when they are not the defaults."""
        words = ["snapvol"]
        if self.db != (data_dir() / "manifests.db").absolute():
            words += ["--db", str(self.db)]
        if self.backup_dir != self.db.parent / "backups":
            words += ["--backup-dir", str(self.backup_dir)]
        return shlex.join([*words, *args])

    @contextlib.contextmanager
    def workspace(
        self,
        lock: str | None = None,
        operation: str = "",
        *,
        create: bool = False,
        stop_timeout: int | None = None,
    ) -> Iterator[Workspace]:
        """The store and the engine, opened together, handed to the core as one ``Workspace``
        and always closed.

        ``lock`` names the container the command will change: the workspace then holds that
        container's operation lock (see ``locked``; ``operation`` says what runs).
        ``create``: whether a missing store is created (see ``store``); ``stop_timeout``:
        ``Workspace.stop_timeout``.
        """
        with self.store(create=create) as store, self.connected(store, stop_timeout) as ws:
            if lock is None:
                yield ws
                return
            with self.locked(ws, lock, operation) as held:
                yield held

    @contextlib.contextmanager
    def connected(self, store: Store, stop_timeout: int | None = None) -> Iterator[Workspace]:
        """A workspace over an open store: the engine connected (and closed after), helpers an
        interrupted run left behind recovered. For a command that reads the store before it
        needs the engine, in one store session. ``stop_timeout``: ``Workspace.stop_timeout``."""
        from snapvol.drill.recovery import recover_drills
        from snapvol.recovery import recover_helpers
        from snapvol.workspace import Workspace

        with self.engine() as engine:
            recover_helpers(engine, self.console)
            recover_drills(engine, self.console)
            yield Workspace(engine, store, self.backup_dir, self.console, stop_timeout=stop_timeout)

    @contextlib.contextmanager
    def locked(
        self,
        ws: Workspace,
        container: str,
        operation: str,
        also: Iterable[tuple[str, str]] = (),
    ) -> Iterator[Workspace]:
        """``ws`` holding ``container``'s operation lock, with what a watchdog needs to guard it.

        ``operation`` says what runs, for whoever is refused meanwhile (``rm`` and ``prune``
        take their locks in ``lifecycle.remove``, through the same ``locking.holding``).
        ``also``: other containers (id, name) it stops too, locked as well (a pod's others).
        """
        from snapvol.volume.watchdog import WatchdogConfig

        info = ws.engine.container(container)
        with locking.holding([(info.id, info.name), *also], operation) as locks:
            fds = tuple(lock.fd for lock in locks)
            yield dataclasses.replace(ws, watchdog=WatchdogConfig(db=self.db, lock_fds=fds))

    @contextlib.contextmanager
    def store(self, *, create: bool = False) -> Iterator[Store]:
        """Open the manifest store and recover interrupted work.

        Only a command that records snapshots passes ``create``: a missing store is then created
        owner-only, and one line says where once the command succeeded (a failure stays one
        ``Error:`` line). Any other command refuses a missing store (exit 6), so a mistyped --db
        or another current directory never looks like an empty history.
        """
        from snapvol.adapters.store import Store
        from snapvol.drill.recovery import recover_drill_records
        from snapvol.recovery import recover_staging, recover_store
        from snapvol.repo.copy import recover_copies

        old = self._old_default_store()
        try:
            store = Store.open(self.db, create=create)
        except StoreError as err:
            if old is None:
                raise
            raise StoreError(f"{err}; {old} is the store of snapvol's old default") from err
        try:
            recover_store(store, self.backup_dir, self.console)
            recover_staging(self.console)
            recover_copies(store, self.console)
            recover_drill_records(store, self.console)
            yield store
        finally:
            store.close()
        if store.created:
            self.console.info(
                f"created the manifest store {self.db} (archives in {self.backup_dir})"
            )
            if old is not None:
                self.console.warn(f"{old} is the store of snapvol's old default: use --db {old}")

    def _old_default_store(self) -> Path | None:
        """``./manifests.db``, where snapvol kept its store before the default stopped depending
        on the current directory, when it is there and the store asked for is not: the history
        must not silently split between the two."""
        old = Path("manifests.db").absolute()
        if old == self.db or self.db.exists() or not old.is_file():
            return None
        return old

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        from snapvol.adapters.engine import Engine

        engine = Engine.connect()
        try:
            yield engine
        finally:
            engine.close()


pass_app = click.make_pass_decorator(AppContext)


def with_app(func: F) -> F:
    """Pass the AppContext as the first argument."""

    @functools.wraps(func)
    @pass_app
    def wrapper(app: AppContext, *args: Any, **kwargs: Any) -> Any:
        return func(app, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
