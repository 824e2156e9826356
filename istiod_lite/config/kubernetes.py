"""The Kubernetes config source: kopf watches the API and feeds one cache → `ConfigSnapshot`s.

Called by istiod_lite's main (and tests) as `KubernetesSource(...)`; `run()` runs a kopf
operator on its own thread and event loop, `watch()` yields snapshots in the caller's loop,
exactly like `ManifestFolderSource` (source.py). Kinds: `kube.kinds.WATCHED`.

Why a thread: `kopf.operator()` treats every task created in its loop after it started as its
own and cancels them all when it stops (kopf's `run_tasks`), which would take down the xDS
server sharing the loop; on a thread of its own it also leaves the process's signals alone.

How kopf is used (thin handlers, CONVENTIONS #11): the source owns its own
`kopf.OperatorRegistry` (never the global one) with, per kind,
* an index handler (`@kopf.index`), called for every listed/added/modified object, which
  applies it to the cache (`kube.cache.upsert`: parse, validate, last-good). kopf runs no other
  handler until every watched kind's initial listing has been indexed, so the first call of
  an event handler means the cache holds everything that existed at start;
* an event handler (`@kopf.on.event`), which removes deleted objects (`kube.cache.remove`),
  marks the source synced on its first call, and reports invalid objects on the object itself
  (`kube.status`, written through `istiod_client()`, the shared `meshcore.kube.KubeClient`);
* a login handler that hands kopf the credentials of the same client.
Peering is off (standalone); the scope is cluster-wide unless `namespaces` is given.

HTTPRoute status (`RouteStatusSink`): istiod_lite.app hands the translation's route statuses
to `report_route_statuses` (any thread); they cross to the kopf loop, where `route_writer`
writes `status.parents` on each route whose live object says otherwise, and checks a route
again on each of its events.

Invariants: handlers are coroutines on the kopf loop, so the cache has one writer (the kopf
thread); snapshots cross to the caller's loop only through `call_soon_threadsafe`. No
snapshot is published before the initial sync (a partial model would withdraw config from
the data plane); after it, every change to the model or the diagnostics publishes one snapshot
(a slow `watch()` consumer sees the latest one, intermediate ones may be skipped).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

import kopf

from istiod_lite.config.kube import cache, status
from istiod_lite.config.kube.kinds import WATCHED, WatchedKind
from istiod_lite.config.route_writer import RouteStatusWriter, route_key
from istiod_lite.config.source import ConfigSnapshot, Diagnostic, log_new
from meshcore.kube import KubeApiError, KubeClient, KubeLoginError

log = logging.getLogger("istiod_lite.config")
HANDLER_PREFIX = "istiod-lite-"  # ids of our kopf handlers (distinct from the operator's)


class _QuietHandlerSuccess(logging.Filter):
    """Drops kopf's INFO line "Handler '<ours>' succeeded.", logged once per watch event of
    every pod; failures (and everything of other handlers) still get through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        msg = record.getMessage()
        return not (msg.startswith(f"Handler '{HANDLER_PREFIX}") and msg.endswith("succeeded."))


_QUIET = _QuietHandlerSuccess()


FORBIDDEN_HINT = ("does the istiod-lite ClusterRole grant this verb? see "
                  "docs/kubernetes-source.md")


def istiod_client(login: Callable[[], kopf.ConnectionInfo] | None = None) -> KubeClient:
    """istiod-lite's API client (the shared one, with istiod-lite's user agent and 403 hint)."""
    if login is None:
        return KubeClient(user_agent="istiod-lite", forbidden_hint=FORBIDDEN_HINT)
    return KubeClient(login, user_agent="istiod-lite", forbidden_hint=FORBIDDEN_HINT)


def default_settings() -> kopf.OperatorSettings:
    """kopf settings for an embedded, read-mostly watcher."""
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True  # no clustered peering: every replica watches
    settings.posting.enabled = False  # we post our own Events (through self.api)
    # The host process owns its lifetime: never SIGKILL it when the operator is cancelled.
    settings.process.ultimate_exiting_timeout = None
    return settings


class KubernetesSource:
    """A `ConfigSource` fed by a kopf operator on a thread of its own; `run()` it once."""

    def __init__(self, api: KubeClient | None = None, *, namespaces: Collection[str] = (),
                 system_namespace: str = "istio-system",
                 settings: kopf.OperatorSettings | None = None) -> None:
        self.api = api if api is not None else istiod_client()
        self.namespaces = tuple(namespaces)
        self.settings = settings if settings is not None else default_settings()
        self.registry = kopf.OperatorRegistry()
        self._cache = cache.KubeCache.empty(system_namespace)
        self._snapshot = self._cache.snapshot
        self._version = 0
        self._changed = asyncio.Event()
        self._synced = asyncio.Event()  # set in the caller's loop
        self._synced_in_kopf = False  # the kopf thread's view
        self._stop = threading.Event()
        self._caller_loop: asyncio.AbstractEventLoop | None = None
        self._fatal: Exception | None = None  # ends run() with this error
        self._evented: dict[cache.ObjKey, Diagnostic] = {}  # last problem we posted an Event for
        self._stats = {"events": 0, "snapshots": 0, "status_patches": 0, "k8s_events": 0,
                       "report_failures": 0}
        self._kopf_loop: asyncio.AbstractEventLoop | None = None
        self._route_writer = RouteStatusWriter(self.api, self._stats)  # kopf thread only
        self._register()
        logging.getLogger("kopf.objects").addFilter(_QUIET)  # idempotent: one shared filter

    # -- the ConfigSource protocol -----------------------------------------------------------
    @property
    def snapshot(self) -> ConfigSnapshot:
        """The latest published snapshot (an empty model until `synced`)."""
        return self._snapshot

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> ConfigSnapshot:
        """Wait until everything that existed at start is in the model."""
        await self._synced.wait()
        return self._snapshot

    async def watch(self) -> AsyncIterator[ConfigSnapshot]:
        """The first complete snapshot, then the latest one after each change."""
        await self._synced.wait()
        seen = self._version
        yield self._snapshot
        while True:
            while self._version == seen:
                await self._changed.wait()
            seen = self._version
            yield self._snapshot

    def statistics(self) -> dict[str, Any]:
        return {**self._stats, "synced": self.synced, "revision": self._snapshot.model.revision,
                "objects": len(self._snapshot.model),
                "diagnostics": len(self._snapshot.diagnostics)}

    # -- running kopf ------------------------------------------------------------------------
    async def run(self, *, stop_timeout: float = 30.0) -> None:
        """Run the operator on its own thread until `stop()` or cancellation.

        Use `wait_synced()` to learn when the first complete model is there. Raises
        `KubeLoginError` when there are no credentials, or what the operator raised. On
        cancellation the operator is stopped and awaited (at most `stop_timeout` seconds)
        before CancelledError propagates.
        """
        if self._caller_loop is not None:
            # A second run would start from a stale cache (deletions missed while stopped).
            raise RuntimeError("KubernetesSource.run() was already called; make a new source")
        loop = asyncio.get_running_loop()
        self._caller_loop = loop
        finished: asyncio.Future[None] = loop.create_future()

        def report(exc: BaseException | None) -> None:
            if not finished.done():
                if exc is None:
                    finished.set_result(None)
                else:
                    finished.set_exception(exc)

        def thread_main() -> None:
            error: BaseException | None = None
            try:
                asyncio.run(self._operate())
            except BaseException as exc:  # handed to the awaiting task, not swallowed
                error = exc
            if not loop.is_closed():
                loop.call_soon_threadsafe(report, error)

        thread = threading.Thread(target=thread_main, name="istiod-lite-kopf", daemon=True)
        thread.start()
        try:
            await asyncio.shield(finished)
        except Exception:
            if self._fatal is None:
                raise  # the operator's own failure; a fatal one is raised below instead
        finally:
            self._stop.set()
            if not finished.done():  # cancelled: let kopf stop; waiting here never raises
                await asyncio.wait({finished}, timeout=stop_timeout)
            if finished.done() and not finished.cancelled():
                finished.exception()  # mark retrieved: raised above or superseded
        if self._fatal is not None:
            raise self._fatal

    async def _operate(self) -> None:
        self._kopf_loop = asyncio.get_running_loop()
        try:
            await kopf.operator(
                registry=self.registry, settings=self.settings, standalone=True,
                clusterwide=not self.namespaces, namespaces=self.namespaces,
                stop_flag=self._stop)
        finally:
            await self.api.close()

    def stop(self) -> None:
        """Ask `run()` to stop gracefully (returns at once; thread-safe)."""
        self._stop.set()

    # -- kopf handlers (thin: the work is in kube.cache and kube.status) ---------------------
    def _register(self) -> None:
        for w in WATCHED:
            kopf.index(group=w.group, version=w.version, plural=w.plural,
                       id=f"{HANDLER_PREFIX}cache/{w.plural}", registry=self.registry)(
                self._indexer(w))
            kopf.on.event(group=w.group, version=w.version, plural=w.plural,
                          id=f"{HANDLER_PREFIX}report/{w.plural}", registry=self.registry)(
                self._event_handler(w))

        @kopf.on.login(id=f"{HANDLER_PREFIX}login", registry=self.registry)
        async def login(**_: Any) -> kopf.ConnectionInfo:
            try:
                return await self.api.relogin()
            except KubeLoginError as exc:
                # No credentials at all: kopf would wait for them forever; stop, and let
                # run() raise this error.
                self._fatal = exc
                self._stop.set()
                raise kopf.PermanentError(str(exc)) from exc

    def _indexer(self, watched: WatchedKind) -> Callable[..., Awaitable[None]]:
        async def index_object(body: Mapping[str, Any], **_: Any) -> None:
            self._apply(cache.upsert(self._cache, watched, body))
            if watched.kind == "HTTPRoute":
                self._route_writer.remember(body)
            return None  # kopf keeps nothing in its own index: our cache is the index
        return index_object

    def _event_handler(self, watched: WatchedKind) -> Callable[..., Awaitable[None]]:
        async def on_event(type: str | None, body: Mapping[str, Any], **_: Any) -> None:
            self._stats["events"] += 1
            if type == "DELETED":
                self._apply(cache.remove(self._cache, watched, body))
                self._evented.pop(cache.object_key(watched, body), None)
            if not self._synced_in_kopf:
                self._synced_in_kopf = True
                snap = self._cache.snapshot
                log.info("Kubernetes source synced: %d objects, %d invalid",
                         len(snap.model), len(snap.diagnostics))
                self._hand_over(snap)
            if type != "DELETED":
                await self._report(watched, body)
            if watched.kind == "HTTPRoute":
                if type == "DELETED":
                    self._route_writer.forget(body)
                else:
                    self._route_writer.remember(body)
                    await self._route_writer.reconcile(route_key(body))
        return on_event

    # -- the single writer of the cache (kopf thread) and the hand-over to the caller --------
    def _apply(self, outcome: cache.Outcome) -> None:
        if outcome.diagnostic != outcome.previous:
            log_new(tuple(d for d in (outcome.previous,) if d),
                    tuple(d for d in (outcome.diagnostic,) if d))
        if outcome.cache is self._cache:
            return
        self._cache = outcome.cache
        if self._synced_in_kopf:
            self._hand_over(self._cache.snapshot)

    def _hand_over(self, snap: ConfigSnapshot) -> None:
        loop = self._caller_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._publish, snap)

    def _publish(self, snap: ConfigSnapshot) -> None:
        """In the caller's loop: make `snap` current and wake the watchers."""
        self._snapshot = snap
        self._version += 1
        self._stats["snapshots"] += 1
        self._synced.set()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- reporting invalid objects on the objects ----------------------------------------------
    async def _report(self, watched: WatchedKind, body: Mapping[str, Any]) -> None:
        key = cache.object_key(watched, body)
        diag = self._cache.diagnostics.get(key)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = status.condition_patch(watched, body, diag, now=now)
        event = status.warning_event(watched, body, diag, self._evented.get(key), now=now)
        try:
            if patch is not None:
                await self.api.merge_patch(watched.path(key[1], key[2], "status"), patch)
                self._stats["status_patches"] += 1
            if event is not None:
                await self.api.create_event(event)
                self._stats["k8s_events"] += 1
        except KubeApiError as exc:
            # The next event of this object retries: both reports are idempotent.
            self._stats["report_failures"] += 1
            log.warning("could not report the problem of %s %s on the object: %s",
                        key[0], f"{key[1]}/{key[2]}" if key[1] else key[2], exc)
            return
        if diag is None:
            self._evented.pop(key, None)
        elif event is not None:
            self._evented[key] = diag

    # -- HTTPRoute status (Gateway API), written on the kopf loop ---------------------------------
    def report_route_statuses(self, statuses: Mapping[tuple[str, str], Any]
                              ) -> concurrent.futures.Future[int]:
        """Make `statuses` (translate.routes.RouteStatus by (namespace, name)) the wanted route
        status and write it where the routes say otherwise. Returns at once (thread-safe); the
        future gives the number of routes patched (tests wait on it, istiod_lite.app does not).
        """
        loop = self._kopf_loop
        if loop is not None and not loop.is_closed():
            try:
                return asyncio.run_coroutine_threadsafe(
                    self._route_writer.set_desired(statuses), loop)
            except RuntimeError:  # the kopf loop closed meanwhile: the source has stopped
                pass
        elif loop is None:
            self._route_writer.desired = statuses  # kopf not started: its events will use them
        done: concurrent.futures.Future[int] = concurrent.futures.Future()
        done.set_result(0)
        return done


