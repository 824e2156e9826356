"""The node agent's reconciler (trio): keeps every pod on this node enrolled exactly as decided.

Inputs: model snapshots (`model_scanned`, from `watch.watch_folder`), CNI events
(`cni_add` / `cni_del` / `cni_check`, from `server.Agent`), ztunnel's snapshot acks
(`snapshot_acked`, from `zds_server.ZdsServer`). Outputs: rules in pod netns
(`cni_plugin.redirect.apply`, idempotent), AddWorkload / DelWorkload to ztunnel (`ZdsServer`),
the `ambient.istio.io/redirection` annotation (`status.StatusWriter`).

What one pass (`reconcile`) does: discover the netns of pods on this node the agent has no record
of (`pod_netns.NetnsFinder`), compute `enrollment.plan`, carry out every Enroll / Unenroll
(concurrently, at most `max_threads` kernel jobs), apply ztunnel's snapshot acks, and repair
annotations someone else changed. `run` loops: a pass after each model change, each ztunnel
snapshot, and every `retry_interval` (failed steps, pending pods with a ztunnel connected).

Enroll: install rules → state PENDING, annotation `pending` → AddWorkload with the netns fd →
ack: ENROLLED, annotation `enabled`. (A pod found at start whose annotation already says `enabled`
stays ENROLLED: it kept being served while the agent was down, and the ZDS snapshot re-sends it.)
Unenroll: remove rules (exactly ours) → DelWorkload to every ztunnel → annotation removed.
Pods are never restarted.

Invariants: one record per pod (namespace, name); every action on a pod runs under that pod's
lock and re-decides from the latest model and record first (`enrollment.decide_pod`), so passes
and CNI calls never interleave on one pod; a failed step is logged and retried, never fatal.
Start order matters (see `app.run_agent`): the first pass completes before the ZDS socket opens,
so a reconnecting ztunnel's first snapshot already names every enrolled pod.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from cni_plugin.agent import enrollment as E
from cni_plugin.agent.enrollment import AgentSettings, KnownPod, PodKey, PodState
from cni_plugin.agent.host_probe import HostProbe
from cni_plugin.agent.pod_netns import NetnsFinder
from cni_plugin.agent.status import StatusWriter
from cni_plugin.agent.zds_server import ZdsServer, ZtunnelUnavailable
from cni_plugin.agent_protocol import AgentRequest, AgentResponse
from cni_plugin.errors import NetnsNotFoundError, RedirectError
from cni_plugin.redirect import apply
from cni_plugin.redirect.rules import RedirectConfig
from meshcore.model import REDIRECTION_ANNOTATION, ClusterModel, Pod
from meshcore.zds import codec as zds_codec

log = logging.getLogger(__name__)

IO_FAILURE = 5
TRY_AGAIN_LATER = 11


@dataclass
class PodRecord:
    """The agent's mutable record of one pod (owned by the Reconciler, changed under its lock)."""

    uid: str
    netns: str
    state: PodState = PodState.UNKNOWN
    config: RedirectConfig | None = None
    ips: tuple[str, ...] = ()
    discovered: bool = False  # found by the finder (not announced by a CNI ADD)
    written: str | None = None  # annotation value last written (or seen at creation)
    written_seq: int = -1  # scan sequence number current when it was written

    def view(self) -> KnownPod:
        return KnownPod(self.uid, self.netns, self.state, self.config, self.ips)


@dataclass
class _Stats:
    passes: int = 0
    enrolled: int = 0
    unenrolled: int = 0
    failures: int = 0
    unserved: frozenset[PodKey] = field(default_factory=frozenset)


class Reconciler:
    def __init__(self, settings: AgentSettings, *, status: StatusWriter, finder: NetnsFinder,
                 zds: ZdsServer | None = None, host_probe: HostProbe | None = None,
                 max_threads: int = 4, add_model_wait: float = 3.0,
                 retry_interval: float = 5.0) -> None:
        self.settings = settings
        self.zds = zds
        self.host_probe = host_probe
        self.model = ClusterModel()
        self._status = status
        self._finder = finder
        self._limiter = trio.CapacityLimiter(max_threads)
        self._add_model_wait = add_model_wait
        self._retry_interval = retry_interval
        self._records: dict[PodKey, PodRecord] = {}
        self._locks: dict[PodKey, trio.Lock] = {}
        self._announced: dict[PodKey, PodRecord] = {}  # CNI ADD before the model had the pod
        self._released: dict[PodKey, str] = {}  # netns the runtime DELeted: never rediscover
        self._kept: dict[PodKey, str] = {}  # served pods with no netns found: uid sent as Keep
        self._acks: list[Mapping[str, zds_codec.Ack]] = []
        self._started_seq = 0
        self._seq = 0
        self._processed_seq = 0
        self._passed_model: ClusterModel | None = None
        self._wake = trio.Event()
        self._progress = trio.Event()
        self._model_changed = trio.Event()
        self.stats = _Stats()

    # -- inputs --------------------------------------------------------------------------------
    def scan_starting(self) -> int:
        """The config source starts reading; returns the sequence number of that scan."""
        self._started_seq += 1
        return self._started_seq

    def model_scanned(self, model: ClusterModel, seq: int) -> None:
        """A scan that started as `seq` produced `model` (maybe the same object as before)."""
        if model is not self.model:
            self.model = model
            self._model_changed.set()
            self._model_changed = trio.Event()
        self._seq = seq
        self._wake.set()

    def snapshot_acked(self, acks: Mapping[str, zds_codec.Ack]) -> None:
        """ZdsServer callback: a ztunnel acked (or NACKed) these pods in its snapshot."""
        self._acks.append(acks)
        self._wake.set()

    def records(self) -> dict[PodKey, KnownPod]:
        return {key: rec.view() for key, rec in self._records.items()}

    def statistics(self) -> dict[str, Any]:
        states = [r.state.value for r in self._records.values()]
        return {"passes": self.stats.passes, "known": len(states),
                "enrolled": states.count("enrolled"), "pending": states.count("pending"),
                "unserved": len(self.stats.unserved), "failures": self.stats.failures,
                "processed_seq": self._processed_seq}

    async def wait_synced(self) -> None:
        """Return once every config change made before this call has been acted on."""
        target = self._started_seq + 1
        while self._processed_seq < target:
            await self._progress.wait()

    # -- the loop ------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            timed_out = True
            with trio.move_on_after(self._retry_interval):
                await self._wake.wait()
                timed_out = False
            self._wake = trio.Event()
            seq = self._seq
            if timed_out or self._acks or self.model is not self._passed_model:
                try:
                    await self.reconcile()
                except Exception:  # a bug or an unexpected failure: log, retry next time
                    self.stats.failures += 1
                    log.exception("reconcile pass failed; retrying in %g s",
                                  self._retry_interval)
            self._processed_seq = max(self._processed_seq, seq)
            self._progress.set()
            self._progress = trio.Event()

    async def reconcile(self) -> E.Plan:
        """One pass over every pod on this node and every pod the agent knows."""
        model = self._passed_model = self.model
        self.stats.passes += 1
        await self._apply_acks()
        await self._discover(model)
        connected = bool(self.zds and self.zds.connected)
        plan = E.plan(model, self.records(), self.settings, ztunnel_connected=connected)
        unserved = frozenset(key for key, _ in plan.unserved)
        for key, why in plan.unserved:
            if key not in self.stats.unserved:
                log.warning("pod %s/%s should be enrolled but %s", *key, why)
        self.stats.unserved = unserved
        await self._keep_served_unfound(model, unserved)
        async with trio.open_nursery() as nursery:
            for action in plan.changes():
                nursery.start_soon(self._act_logged, action.key)
        for key, _ in E.annotation_fixes(self.model, self.records()):
            rec = self._records.get(key)
            if rec is not None and rec.written_seq < self._seq:  # not just our own write lagging
                async with self._lock(key):
                    await self._write(key, E.wanted_annotation(rec.state), force=True)
        await self._sync_host_probe()
        return plan

    def enrolled_ips(self) -> frozenset[str]:
        """IPs of the pods ztunnel serves (what kubelet probes may reach directly)."""
        ips: set[str] = set()
        for key, rec in self._records.items():
            if rec.state is PodState.ENROLLED:
                pod = self.model.get("Pod", *key)
                ips.update(rec.ips)
                if isinstance(pod, Pod):
                    ips.update(pod.pod_ips)
        return frozenset(ips)

    async def _sync_host_probe(self) -> None:
        if self.host_probe is not None:
            await self.host_probe.sync(self.enrolled_ips)

    async def _keep_served_unfound(self, model: ClusterModel, unserved: frozenset[PodKey]
                                   ) -> None:
        """Pods that should be enrolled, whose annotation says ztunnel served them (before an
        agent restart) but whose netns the finder cannot locate: name them in ztunnel's snapshot
        with KeepWorkload (Istio's agent does the same), so ztunnel does not drop a pod that is
        still running. Found later: its AddWorkload replaces the Keep. Gone, unlabelled or
        moved while kept: ztunnel gets DelWorkload."""
        if self.zds is None:
            return
        for key in sorted(unserved - self._kept.keys()):
            pod = model.get("Pod", *key)
            if isinstance(pod, Pod) and pod.annotations.get(REDIRECTION_ANNOTATION) == E.ENABLED:
                uid = E.workload_uid(pod, "", key)
                self._kept[key] = uid
                await self.zds.keep_workload(uid)
                log.warning("pod %s/%s was served by ztunnel but its network namespace is not "
                            "found: ztunnel is asked to keep serving it (KeepWorkload)", *key)
        for key, uid in list(self._kept.items()):
            if key in self._records:  # found again: its AddWorkload replaces the Keep
                del self._kept[key]
            elif key not in unserved:
                del self._kept[key]
                await self.zds.del_workload(uid)
                log.info("pod %s/%s (kept without a netns) is no longer to be served; ztunnel "
                         "told to drop it", *key)

    async def _act_logged(self, key: PodKey) -> None:
        try:
            async with self._lock(key):
                await self._act(key)
        except (RedirectError, OSError) as exc:
            self.stats.failures += 1
            log.error("pod %s/%s: %s (retrying in %g s)", *key, exc, self._retry_interval)
        except Exception:
            self.stats.failures += 1
            log.exception("pod %s/%s: reconcile step failed", *key)
        finally:
            self._drop_lock(key)

    async def _discover(self, model: ClusterModel) -> None:
        for key, rec in list(self._announced.items()):  # CNI ADD came before the model had it
            pod = model.get("Pod", *key)
            if pod is not None:
                del self._announced[key]
                rec.written = pod.annotations.get(REDIRECTION_ANNOTATION)
                self._records.setdefault(key, rec)
        for key in [k for k in self._released if model.get("Pod", *k) is None]:
            del self._released[key]
        missing = [p for p in model.pods_on_node(self.settings.node)
                   if p.key not in self._records and not p.host_network and not p.terminal]
        if not missing:
            return
        found = dict(await trio.to_thread.run_sync(self._finder.find, missing))
        for pod in missing:
            key = pod.key
            path = found.get(key)
            if path is None or self._released.get(key) == path or key in self._records:
                continue
            self._records[key] = PodRecord(
                E.workload_uid(pod, "", key), path, discovered=True,
                written=pod.annotations.get(REDIRECTION_ANNOTATION))

    async def _apply_acks(self) -> None:
        acks, self._acks = self._acks, []
        for batch in acks:
            for key, rec in list(self._records.items()):
                ack = batch.get(rec.uid)
                if ack is None:
                    continue
                async with self._lock(key):
                    if ack.ok and rec.state is PodState.PENDING:
                        rec.state = PodState.ENROLLED
                    elif not ack.ok and rec.state is PodState.ENROLLED:
                        rec.state = PodState.PENDING
                    await self._sync_host_probe()
                    await self._write(key, E.wanted_annotation(rec.state))

    # -- actions (caller holds the pod lock) ---------------------------------------------------
    def _lock(self, key: PodKey) -> trio.Lock:
        return self._locks.setdefault(key, trio.Lock())

    def _drop_lock(self, key: PodKey) -> None:
        lock = self._locks.get(key)
        if (key not in self._records and lock is not None and not lock.locked()
                and not lock.statistics().tasks_waiting):
            del self._locks[key]

    async def _act(self, key: PodKey) -> E.Action | None:
        rec = self._records.get(key)
        connected = bool(self.zds and self.zds.connected)
        action = E.decide_pod(self.model, key, rec.view() if rec else None, self.settings,
                              ztunnel_connected=connected)
        if isinstance(action, E.Enroll):
            await self._enroll(action)
        elif isinstance(action, E.Unenroll):
            await self._unenroll(action)
        return action

    async def _thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def _enroll(self, action: E.Enroll) -> None:
        key, rec = action.key, self._records[action.key]
        try:
            fd = os.open(rec.netns, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            await self._forget(key, rec, f"network namespace {rec.netns} is gone")
            raise NetnsNotFoundError(f"network namespace {rec.netns} of pod {key[0]}/{key[1]} "
                                     "does not exist (pod sandbox already gone?)",
                                     netns=rec.netns) from None
        try:
            changed = bool(await self._thread(apply.install, fd, action.config))
            first = rec.state is not PodState.ENROLLED
            rec.config = action.config
            if not first:
                return  # already acked by ztunnel: only the rules changed
            resumed = (rec.state is PodState.UNKNOWN and rec.discovered
                       and rec.written == E.ENABLED)
            if resumed:
                rec.state = PodState.ENROLLED  # served before the agent restarted
            else:
                rec.state = PodState.PENDING
                await self._write(key, E.PENDING_VALUE)
            if self.zds is None:
                return
            add = zds_codec.AddWorkload(action.uid, key[1], key[0], action.service_account)
            try:
                ack = await self.zds.add_workload(add, fd)
            except ZtunnelUnavailable as exc:
                ack, failure = None, str(exc)
        finally:
            os.close(fd)
        if ack is not None and ack.ok:
            rec.state, failure = PodState.ENROLLED, ""
        elif ack is not None:  # NACK: ztunnel could not start the pod's proxy
            rec.state, failure = PodState.PENDING, f"ztunnel NACKed the pod: {ack.error}"
        # else no ztunnel: PENDING stays PENDING; ENROLLED (restart) stays until a NACK
        await self._sync_host_probe()  # probe IPs in before the annotation says enabled
        await self._write(key, E.wanted_annotation(rec.state))
        if resumed and rec.state is PodState.ENROLLED:
            log.info("pod %s/%s still enrolled (%s); rules %s", *key, action.reason,
                     "re-installed" if changed else "already in place")
        elif rec.state is PodState.ENROLLED:
            self.stats.enrolled += 1
            log.info("enrolled pod %s/%s (%s) netns=%s", *key, action.reason, rec.netns)
        else:
            log.warning("pod %s/%s: rules in place, pending: %s", *key, failure)

    async def _unenroll(self, action: E.Unenroll) -> bool:
        key, rec = action.key, self._records[action.key]
        changed = bool(await self._thread(apply.remove, rec.netns)) if rec.netns else False
        if self.zds is not None and action.notify_ztunnel:
            await self.zds.del_workload(rec.uid)
        was = rec.state
        rec.state, rec.config = PodState.OUT, None
        if self.model.get("Pod", *key) is not None or rec.written is not None:
            await self._write(key, None)  # also for a deleted pod: a stale overlay must not lie
        if action.forget:
            self._records.pop(key, None)
        await self._sync_host_probe()
        if was is not PodState.UNKNOWN or changed:
            self.stats.unenrolled += 1
            log.info("unenrolled pod %s/%s (%s)", *key, action.reason)
        return changed

    async def _forget(self, key: PodKey, rec: PodRecord, why: str) -> None:
        if self.zds is not None and rec.state in (PodState.PENDING, PodState.ENROLLED):
            await self.zds.del_workload(rec.uid)
        self._records.pop(key, None)
        log.warning("forgetting pod %s/%s: %s", *key, why)

    async def _write(self, key: PodKey, value: str | None, *, force: bool = False) -> None:
        rec = self._records.get(key)
        if rec is not None and rec.written == value and not force:
            return
        try:
            await trio.to_thread.run_sync(self._status.set_redirection, key[0], key[1], value)
        except OSError as exc:
            log.warning("pod %s/%s: cannot record %s=%s: %s", *key, REDIRECTION_ANNOTATION,
                        value, exc)
            return
        if rec is not None:
            rec.written, rec.written_seq = value, self._started_seq

    # -- CNI events ----------------------------------------------------------------------------
    async def _wait_for_pod(self, key: PodKey, uid: str) -> Pod | None:
        with trio.move_on_after(self._add_model_wait):
            while True:
                pod = self.model.get("Pod", *key)
                if isinstance(pod, Pod) and (not uid or not pod.meta.uid or pod.meta.uid == uid):
                    return pod
                await self._model_changed.wait()
        return None

    async def cni_add(self, request: AgentRequest) -> AgentResponse:
        key = (request.pod.namespace, request.pod.name)
        if not request.pod.name:
            return AgentResponse(ok=True, enrolled=False)
        ips = tuple(ip.address.partition("/")[0] for ip in request.ips)
        self._released.pop(key, None)
        pod = await self._wait_for_pod(key, request.pod.uid)
        async with self._lock(key):
            rec = self._records.get(key)
            if rec is None or rec.netns != request.netns:
                rec = PodRecord(E.workload_uid(pod, request.pod.uid, key), request.netns,
                                ips=ips, written=pod.annotations.get(REDIRECTION_ANNOTATION)
                                if pod else None)
            rec.ips = ips
            if pod is None:
                self._announced[key] = rec
                log.warning("CNI ADD for pod %s/%s, which the config source does not list "
                            "(yet); it is enrolled once it appears", *key)
                return AgentResponse(ok=True, enrolled=False)
            self._records[key] = rec
            await self._act(key)
            if rec.state is PodState.PENDING and self.zds is not None:
                return AgentResponse(
                    ok=False, code=TRY_AGAIN_LATER,
                    msg=f"pod {key[0]}/{key[1]}: rules are in place but ztunnel has not taken "
                        "the pod", details="the pod stays pending until ztunnel acknowledges it")
            return AgentResponse(ok=True, enrolled=rec.state in (PodState.PENDING,
                                                                 PodState.ENROLLED))

    async def cni_del(self, request: AgentRequest) -> AgentResponse:
        key = (request.pod.namespace, request.pod.name)
        self._announced.pop(key, None)
        async with self._lock(key):
            rec = self._records.get(key)
            if request.netns:
                self._released[key] = request.netns
            if rec is None or (request.netns and rec.netns != request.netns):
                changed = bool(await self._thread(apply.remove, request.netns)) \
                    if request.netns else False
                return AgentResponse(ok=True, enrolled=False, changed=changed)
            changed = await self._unenroll(E.Unenroll(
                key, rec.uid, rec.netns, "CNI DEL", forget=True,
                notify_ztunnel=rec.state in (PodState.PENDING, PodState.ENROLLED)))
        self._drop_lock(key)
        return AgentResponse(ok=True, enrolled=False, changed=changed)

    async def cni_check(self, request: AgentRequest) -> AgentResponse:
        key = (request.pod.namespace, request.pod.name)
        async with self._lock(key):
            rec = self._records.get(key)
            if rec is None or rec.config is None or rec.state not in (PodState.PENDING,
                                                                      PodState.ENROLLED):
                return AgentResponse(ok=True, enrolled=False)
            if await self._thread(apply.is_installed, request.netns or rec.netns, rec.config):
                return AgentResponse(ok=True, enrolled=True)
        return AgentResponse(ok=False, code=IO_FAILURE,
                             msg=f"in-pod redirection rules of pod {key[0]}/{key[1]} are "
                                 "missing or differ from the expected set",
                             details="the agent re-installs them on its next pass")
