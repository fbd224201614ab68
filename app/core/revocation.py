"""Bans (a user, for a while) and revoked tokens (by `jti`, until they expire).

Written to Redis when a queue is configured, so every worker and instance refuses them
at connect and on REST, and kept in memory otherwise. Live sockets are not checked
against Redis per event (a round trip on the hot path): a ban or revocation is also
sent to every worker over the control bus, which installs it in memory and disconnects
the sockets it covers at once (app/sockets/worker_ops.py).

Connects and REST calls are checked against this worker's memory, which mirrors Redis:
every ban and revocation is also added to an index (a sorted set by expiry, with a
version token renewed at each change), which each worker reads again at its heartbeat
when the version changed (the bans a Redis holds from before the index are added to
it once, by the first worker that finds it unmarked). A revocation therefore reaches
a worker at once over the control bus, or within a heartbeat if that message was
lost. A mirror not read for SYNC_FRESH seconds (Redis unreachable) is not trusted: the
check then asks Redis, and if Redis cannot be read the call is let through on the
token alone (logged): an outage of the queue must not lock every user out. (Used
refresh tokens, `use_once`, are not added as they are used, only by the backfill:
the refresh endpoint asks Redis about them.)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from app.core.errors import AuthError
from app.core.tokens import Identity

log = logging.getLogger(__name__)

BANNED = "banned"
REVOKED = "token_revoked"

# Seconds a mirror read stays the truth at connect (a few heartbeats: app/core/queue).
SYNC_FRESH = 2.0
BACKFILL_RETRY = 60  # seconds between two attempts at adding older bans to the index


class Revocations:
    def __init__(self, redis: Callable[[], Any] | None, prefix: str) -> None:
        self._redis = redis  # None: memory only (one process)
        self._prefix = prefix
        self.bans: dict[str, float] = {}  # user id -> until (epoch seconds)
        # user id -> the ban's reason: whichever ends a banned socket (the kick, or its
        # token watcher if it comes first) tells it the same `kicked` notice
        self.ban_reasons: dict[str, str] = {}
        self.tokens: dict[str, float] = {}  # jti -> until
        self.families: dict[str, float] = {}  # token family -> until
        self._index = f"{prefix}:revocations"
        self._version: Any = object()  # the index's version last read (none yet)
        self._synced: float | None = None  # when the mirror was last confirmed
        # (loop) -> None: runs the backfill beside the heartbeat (set by the server)
        self.spawn: Callable[[Callable[[], None]], Any] | None = None
        self._backfilling = False
        self._backfill_after = 0.0  # (monotonic) a failed backfill is tried again then

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}:{kind}:{name}"

    # --- writing ------------------------------------------------------------
    def ban(self, user_id: str, seconds: float, reason: str = "") -> float:
        until = time.time() + seconds
        self._store("ban", user_id, until)
        self.bans[user_id] = until
        self.ban_reasons[user_id] = reason
        return until

    def kick_notice(self, user_id: str) -> dict:
        """What a banned user's socket is told as it is ended (`kicked`)."""
        return {"reason": self.ban_reasons.get(user_id, ""), "until": int(self.bans[user_id])}

    def revoke(self, jti: str, until: float) -> None:
        if jti and until > time.time():
            self._store("revoked", jti, until)
            self.tokens[jti] = until

    def revoke_family(self, family: str, until: float) -> None:
        """Every token descending from one sign-in (a refresh token was used twice)."""
        if family and until > time.time():
            self._store("family", family, until)
            self.families[family] = until

    def use_once(self, jti: str, until: float) -> bool:
        """Mark a single-use token (a refresh token) used; False if it already was."""
        if not jti:
            return False
        self._prune()
        if self._redis is not None:
            milliseconds = max(int((until - time.time()) * 1000), 1)
            if not self._redis().set(self._key("revoked", jti), str(until), px=milliseconds,
                                     nx=True):
                return False
        elif jti in self.tokens:
            return False
        self.tokens[jti] = until
        return True

    def _prune(self) -> None:
        # Entries end when they expire; swept whenever the tables have grown.
        now = time.time()
        for table in (self.bans, self.tokens, self.families):
            if len(table) > 1000:
                for name in [name for name, until in table.items() if until <= now]:
                    del table[name]

    def _store(self, kind: str, name: str, until: float) -> None:
        self._prune()
        if self._redis is not None:  # errors reach the caller: a ban must not be silent
            milliseconds = max(int((until - time.time()) * 1000), 1)
            pipe = self._redis().pipeline(transaction=True)  # (all, or none of it)
            pipe.set(self._key(kind, name), str(until), px=milliseconds)
            pipe.zadd(self._index, {f"{kind}:{name}": until})
            pipe.zremrangebyscore(self._index, "-inf", time.time())
            # a new value each time (a counter could come back to one a worker read,
            # after a Redis restart, and a change would go unseen)
            pipe.set(self._index + ":version", uuid.uuid4().hex)
            pipe.execute()

    def sync(self) -> None:
        """Every worker's heartbeat: the index read again if it changed (RedisError:
        the mirror is no longer trusted once SYNC_FRESH has passed)."""
        if self._redis is None:
            return
        r = self._redis()
        version, complete = r.mget(self._index + ":version", self._index + ":complete")
        if complete is None:  # (a Redis that has bans from before the index: added)
            if not self._backfilling and time.monotonic() >= self._backfill_after:
                self._backfilling = True
                (self.spawn or (lambda task: task()))(self._backfill)
            return  # (not trusted until then: connects ask Redis)
        if version != self._version:
            tables = {"ban": self.bans, "revoked": self.tokens, "family": self.families}
            for member, until in r.zrangebyscore(self._index, time.time(), "+inf",
                                                 withscores=True):
                kind, _, name = (member.decode() if isinstance(member, bytes)
                                 else member).partition(":")
                table = tables.get(kind)
                if table is not None:
                    table[name] = max(table.get(name, 0.0), float(until))
            self._version = version
        self._synced = time.monotonic()

    def _backfill(self) -> None:
        """Bans and revocations stored before the index existed (an earlier release),
        into it; then the index is marked complete. Once per Redis (each worker may do
        it: the additions are the same), beside the heartbeat (a SCAN of the keyspace)."""
        try:
            r = self._redis()
            # one worker at a time (the others find the index complete, or try later)
            if r.set(self._index + ":backfilling", "1", nx=True, ex=BACKFILL_RETRY):
                self._scan_into_index(r)
                r.delete(self._index + ":backfilling")
        except Exception as exc:  # (a refused SCAN, a value that is not a time: later)
            log.warning("bans from before the index could not be added to it (%s): "
                        "again in %d s; until then connects ask Redis", exc, BACKFILL_RETRY)
        finally:
            self._backfill_after = time.monotonic() + BACKFILL_RETRY
            self._backfilling = False

    def _scan_into_index(self, r) -> None:
        for kind in ("ban", "family", "revoked"):
            keys = list(r.scan_iter(match=self._key(kind, "*"), count=1000))
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                entries = {}
                for key, value in zip(chunk, r.mget(chunk), strict=True):
                    if value is not None:
                        name = (key.decode() if isinstance(key, bytes) else key)[
                            len(self._key(kind, "")):]
                        entries[f"{kind}:{name}"] = float(value)
                if entries:
                    r.zadd(self._index, entries)
        r.set(self._index + ":complete", "1")

    def remember(self, payload: dict) -> None:
        """Install a ban or revocation sent over the control bus (each worker)."""
        if payload.get("user_id"):
            self.bans[str(payload["user_id"])] = float(payload["until"])
            self.ban_reasons[str(payload["user_id"])] = str(payload.get("reason", ""))
        if payload.get("jti"):
            self.tokens[str(payload["jti"])] = float(payload["until"])
        if payload.get("family"):
            self.families[str(payload["family"])] = float(payload["until"])

    # --- checking -----------------------------------------------------------
    def check(self, identity: Identity) -> None:
        """Raise AuthError if the user is banned or the token revoked (connect, REST)."""
        self.check_local(identity)
        if self._redis is None or (self._synced is not None
                                   and time.monotonic() - self._synced < SYNC_FRESH):
            return  # (the mirror is fresh: no round trip)
        try:
            banned, revoked, family = self._redis().mget(
                self._key("ban", identity.id), self._key("revoked", identity.jti or "-"),
                self._key("family", identity.family or "-"))
        except RedisError as exc:
            log.warning("could not read bans from the message queue (%s): token checked only", exc)
            return
        if banned is not None:
            self.bans[identity.id] = float(banned)
        if revoked is not None:
            self.tokens[identity.jti] = float(revoked)
        if family is not None:
            self.families[identity.family] = float(family)
        self.check_local(identity)

    def check_local(self, identity: Identity) -> None:
        """The in-memory part: cheap enough for every event of a live socket."""
        reason = self.refusal(identity)
        if reason == BANNED:
            raise AuthError("this user is banned", code=BANNED, status=403,
                            details={"until": int(self.bans[identity.id])})
        if reason == REVOKED:
            raise AuthError("this token was revoked: sign in again", code=REVOKED)

    def refusal(self, identity: Identity, now: float | None = None) -> str | None:
        now = time.time() if now is None else now
        until = self.bans.get(identity.id)
        if until is not None:
            if until > now:
                return BANNED
            del self.bans[identity.id]
            self.ban_reasons.pop(identity.id, None)
        until = self.tokens.get(identity.jti) if identity.jti else None
        if until is not None:
            if until > now:
                return REVOKED
            del self.tokens[identity.jti]
        until = self.families.get(identity.family) if identity.family else None
        if until is not None:
            if until > now:
                return REVOKED
            del self.families[identity.family]
        return None
