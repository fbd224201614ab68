"""Who is alive: the set of live workers in Redis, and this worker's memory of it."""

from __future__ import annotations

import contextlib
import logging
import time

from redis.exceptions import NoScriptError, RedisError

from app.core.errors import QueueUnavailable
from app.core.queue.partitions import foreign_workers
from app.core.queue.scripts import BORN_SHA, MEMBERS_SCRIPT, NOSCRIPT, decoded

log = logging.getLogger("app.core.queue")

# Seconds between two registrations of a worker in the set of live workers.
HEARTBEAT = 0.5


# A worker missing from that set this long (of time with a working queue) is gone.
MEMBER_TTL = 2.0


# After an outage, every worker must resubscribe and register again before absence
# means anything: a worker whose Redis connections were still backing off would
# otherwise be dropped, and the messages it misses acked ok.
RESTORE_GRACE = 5.0


# A set (re)born this long ago holds every live worker: each registers within a
# heartbeat of Redis coming back (one more for a late one), or as soon as its
# subscription is back if it never registered.
REFILL = 2 * HEARTBEAT


# Longest wait at boot for every other live worker to have read this one in the set
# (a dead worker blocks it until its entry expires: MEMBER_TTL).
ANNOUNCE_TIMEOUT = MEMBER_TTL + 2 * HEARTBEAT


# Seconds a leaving worker stays subscribed after saying so, while the others hear it.
LEAVE_GRACE = 0.5


LEAVE = "worker_leave"


class AbsentTwice:
    """Which workers with entries of their own are gone: absent from the live set in two
    heartbeats in a row (a worker just starting is not in it at its first). Presence
    and the rooms' holders reap by it."""

    def __init__(self) -> None:
        self._suspects: set[str] = set()

    def gone(self, hosts, alive: set[str], me: str) -> set[str]:
        """Of `hosts` (those with entries), the ones to reap now."""
        orphans = {host for host in hosts if host != me and host not in alive}
        gone, self._suspects = orphans & self._suspects, orphans
        return gone


class SetView:
    """One read of the set of live workers (`MEMBERS_SCRIPT`)."""

    __slots__ = ("added", "born", "now", "scores")

    def __init__(self, reply: list) -> None:
        self.now, self.born, self.added = int(reply[0]), decoded(reply[1]), bool(reply[2])
        flat = [decoded(v) for v in reply[3]]
        self.scores = {flat[i]: float(flat[i + 1]) for i in range(0, len(flat), 2)}

    @property
    def born_ms(self) -> int | None:
        """When the set started (Redis ms); None: nobody registered since it started anew."""
        ms = self.born.rpartition(":")[2]
        return int(ms) if ms.isdigit() else None

    def refilled(self) -> bool:
        """Has the set existed long enough to hold every live worker?"""
        return self.born_ms is not None and self.now - self.born_ms >= REFILL * 1000


class Membership:
    """The workers this one knows to be alive, remembered across Redis outages."""

    def __init__(self, ttl: float = MEMBER_TTL, grace: float = RESTORE_GRACE) -> None:
        self.ttl = ttl
        self.grace = grace
        self.alive: set[str] = set()  # host_ids
        self.left: set[str] = set()
        self.healthy_since = time.monotonic()
        self.restored = False  # healthy_since is the end of an outage
        self.born: str | None = None  # the birth of the set this view has read
        self.complete = False  # it has read that set once it held every live worker

    def read(self, view: SetView, now: float | None = None) -> None:
        """A read of the set: its members, and whether it was reborn meanwhile (a
        restarted Redis: it refills, and this view is incomplete until it has)."""
        if view.born != self.born:
            if self.born is not None:
                self.queue_restored(now)  # absences count from the refill, not before
            self.born = view.born
            self.complete = False
        if view.refilled():
            self.complete = True
        self.update(view.scores, now)

    def update(self, members, now: float | None = None) -> None:
        """The set as Redis has it now: new workers added; missing ones dropped, but
        only from a view that is fresh (a stale one never makes a worker look gone)."""
        now = time.monotonic() if now is None else now
        present = {member.decode() if isinstance(member, bytes) else member
                   for member in members}
        self.alive |= present - self.left
        # Absent from a set that has been kept up for `ttl` (every live worker
        # re-registers several times in that span): gone. Just after an outage the set
        # is still refilling, so absence counts only from when the queue came back.
        if self.fresh(now):
            self.alive &= present

    def forget(self, host: str) -> None:
        self.left.add(host)
        self.alive.discard(host)

    def queue_restored(self, now: float | None = None) -> None:
        """The queue works again: absences are counted from now, not from the outage."""
        self.healthy_since = time.monotonic() if now is None else now
        self.restored = True

    def expected(self) -> int:
        return len(self.alive)

    def fresh(self, now: float | None = None) -> bool:
        """Is the set complete (the queue has worked for `ttl`)?"""
        now = time.monotonic() if now is None else now
        return now - self.healthy_since > (max(self.ttl, self.grace) if self.restored else self.ttl)


class Heartbeat:
    """RedisQueueManager's registration in the set, its reads of it, and what a publish must reach."""

    def check(self) -> str | None:
        """None when a publish made now would be judged ok (readiness), else why not (in
        every partition of the queue)."""
        if self.partitions[0].foreign:
            return "message queue: a worker with another MESSAGE_QUEUE_PARTITIONS is live"
        for queue in self.partitions:
            problem = queue._check_partition()
            if problem is not None:
                return f"{problem} (partition {queue.partition})" if queue.partition else problem
        return None

    def _check_partition(self) -> str | None:
        try:
            born = self._born_now()
        except RedisError as exc:
            return f"message queue unreachable: {exc.__class__.__name__}: {exc}"
        if self.write_only:
            return None
        if not self._subscribed:
            return "message queue: this worker is not subscribed yet (resubscribing)"
        if born != self.membership.born or not self.membership.complete:
            return "message queue: the workers are registering again (a new or restarted Redis)"
        return None

    def _born_now(self) -> str:
        client = self.publisher()
        try:
            return decoded(client.evalsha(BORN_SHA, 1, self.born_key))
        except NoScriptError:
            self._load_scripts(client)
            return decoded(client.evalsha(BORN_SHA, 1, self.born_key))

    def leave(self) -> None:
        """Tell the other workers this one is going (a drained worker), so that they stop
        expecting it at once instead of refusing publishes until it expires. Called by
        the drain and again as the worker exits (app/worker.py): the second call waits
        for the first to finish."""
        if self.write_only:
            return
        if self._leaving is not None:
            self._leaving.wait(LEAVE_GRACE + self._settings.redis_socket_timeout)
            return
        queues = self.partitions  # (the first partition's manager leaves for them all)
        for queue in queues:
            queue._leaving = self.server.eio.create_event()
        try:
            # (at once in every partition: one whose master is down must not hold up the others)
            said: list[bool] = []
            tasks = [self.server.start_background_task(lambda q=queue: said.append(q._say_leaving()))
                     for queue in queues[1:]]
            said.append(self._say_leaving())
            for task in tasks:
                task.join()
            if any(said):
                self.server.sleep(LEAVE_GRACE)
        finally:
            for queue in queues:
                queue._leaving.set()

    def _say_leaving(self) -> bool:
        try:
            return self._say_leaving_now()
        except Exception:  # (a task's error: eventlet's join would raise it into the drain)
            log.exception("leaving the message queue failed%s",
                          f" (partition {self.partition})" if self.partition else "")
            return False

    def _say_leaving_now(self) -> bool:
        with contextlib.suppress(RedisError):
            self.publisher().zrem(self.members_key, self.host_id)
        with contextlib.suppress(RedisError):
            self.unregister_routes()
        try:
            self.publish_message({"method": LEAVE})
        except QueueUnavailable:
            return False
        return True

    def _members(self, register: bool) -> SetView:
        if self._members_script is None:
            self._members_script = self.publisher().register_script(MEMBERS_SCRIPT)
        # (ARGV[2]: the prefix of the routing workers' marks: app/core/queue/routes.py)
        args = [int(MEMBER_TTL * 1000), self.registered_key("")] + (
            [self.host_id] if register else [])
        return SetView(self._members_script(keys=[self.members_key, self.born_key], args=args))

    def _heartbeat_loop(self) -> None:
        while self._leaving is None:
            if self._beat():
                self._heartbeat_hooks()
                self.tick()
            self.sweep_routes()
            self._forget_silent_publishers()
            self.server.sleep(HEARTBEAT)

    def _beat(self) -> bool:
        """Register (once subscribed: before that, others would expect this worker in
        every PUBLISH count and refuse their publishes) and read the live workers;
        True when that view is fresh."""
        if self._leaving is not None or not (self._subscribed or self._registered):
            return False
        try:
            view = self._members(register=True)
        except RedisError as exc:
            self._publishing.failed(exc)
            return False
        self._registered = True
        if self._first_registration is None or view.added:  # (again: the set started anew)
            self._first_registration = view.now
        self._queue_works()  # first: absences after an outage count from now
        # added again (its rooms' holder entries may be lost, or reaped; the script took
        # its mark away), or a new birth of the set: its rooms registered again
        if view.added or view.born != self._routes_born:
            self._routes_born = None
        if self._routes_born is None:
            try:
                if self.register_routes(view.born):
                    self._routes_born = view.born
            except RedisError as exc:
                self._publishing.failed(exc)
                return False
        self._read(view)
        return self.membership.fresh()

    def _read(self, view: SetView) -> None:
        self.membership.read(view)
        if self.partition == 0:
            foreign = foreign_workers(view.scores, len(self.partitions))
            if foreign - self.foreign:
                log.error("worker(s) %s run with another MESSAGE_QUEUE_PARTITIONS than this one "
                          "(%d): every publish is refused until they are gone (the same value "
                          "everywhere; changing it is a full restart)", ", ".join(sorted(foreign)),
                          len(self.partitions))
            self.foreign = foreign
        # every other member has registered, so read the set, since this one did
        if (self._first_registration is not None and self.announced is not None
                and all(score > self._first_registration
                        for host, score in view.scores.items() if host != self.host_id)):
            self.announced.set()

    def wait_announced(self, timeout: float = ANNOUNCE_TIMEOUT) -> bool:
        """At boot, before serving: wait until every other live worker knows this one
        (else their publishes could miss its clients and be acked ok), and until this
        one's view is complete (a set born moments ago is still filling: its first
        publishes would be refused). False after `timeout` (Redis unreachable:
        publishes fail meanwhile, and the set's refill covers this worker once Redis
        is back)."""
        if self.write_only or self.announced is None:
            return True
        deadline = time.monotonic() + timeout
        waiting = [queue for queue in self.partitions if not queue._announced()]
        while waiting and time.monotonic() < deadline:
            for queue in waiting:
                queue._beat()  # faster than the heartbeat: workers booting together meet sooner
            self.server.sleep(HEARTBEAT / 10)
            waiting = [queue for queue in waiting if not queue._announced()]
        for queue in waiting:
            # registered even while unsubscribed from now on: the others then refuse
            # publishes that miss this worker's clients instead of acking them ok
            queue._registered = True
            log.warning("serving before every worker has seen this one in the message queue "
                        "(%s%s)", "not subscribed yet" if not queue._subscribed
                        else "not read by every other worker yet, or the set is refilling",
                        f", partition {queue.partition}" if queue.partition else "")
        return not waiting

    def _announced(self) -> bool:
        return self.announced is not None and self.announced.is_set() and self.membership.complete

    def _heartbeat_hooks(self) -> None:
        for hook in self.heartbeat_hooks:
            try:
                hook(set(self.membership.alive))
            except (RedisError, QueueUnavailable) as exc:  # an outage: logged once by it
                self._publishing.failed(exc)
            except Exception:  # a hook must not stop the heartbeat
                log.exception("heartbeat hook failed")

    def _queue_works(self) -> None:
        if self._publishing.restored():
            self.membership.queue_restored()

    def _await_refill(self) -> None:
        """An external emitter, before publishing: a set reborn a moment ago is still
        filling (a just-started deploy, a restarted Redis): wait for it, up to REFILL."""
        view = self._members(register=False)
        if view.born_ms is not None and not view.refilled():
            time.sleep((view.born_ms + REFILL * 1000 - view.now) / 1000)

    def _alive(self, born) -> set[str] | None:
        """The workers a publish must reach (those of them holding its room, for a
        routed one); None while nobody can tell (the set is refilling, or was reborn
        since this view last read it)."""
        if self.write_only:  # an external emitter: the set as Redis has it now
            view = self._members(register=False)
            first = view if self.partition == 0 else self.partitions[0]._members(register=False)
            if foreign_workers(first.scores, len(self.partitions)):
                return None
            return set(view.scores) if view.refilled() else None
        if born is NOSCRIPT or decoded(born) != self.membership.born or not self.membership.complete:
            return None
        if self.partitions[0].foreign:
            return None
        return set(self.membership.alive)
