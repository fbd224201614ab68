"""Ticks: a partition's position moves on while its rooms are quiet.

With several partitions (app/core/queue/partitions.py) a socket's offset lists this
worker's position in every partition, the last id delivered there. A quiet partition's
position would stay where it was, or at 0-0 when nothing was ever delivered, and a
recovery from a position older than HISTORY_MAX_AGE_SECONDS cannot tell whether
entries expired since: every recovered socket with a room (or the namespace's
announcements) in that partition would start fresh. So, about once a second per
partition (one worker at a time, by a key that expires), a tick raises the partition's
log counter to Redis's clock and publishes the new id on the partition's shared
channel. Every entry appended before it has a smaller id and was published before it;
every entry after, a greater one. A worker's subscription brings the tick after
everything before it, so when its listener reads the tick, every socket of this worker
has had all of the partition's events up to that id (in the rooms it is in), and the
position moves to it (`LoggedDelivery.raise_position`). A worker also ticks, whatever
the key says, once it has subscribed: its position is then known a moment later.
"""

from __future__ import annotations

import hashlib

from redis.exceptions import NoScriptError, RedisError

TICK = "tick"

# Seconds between a partition's ticks (the key that lets one worker tick expires).
TICK_INTERVAL = 1.0

# KEYS: the log's hash (its `last` id), the key that lets one worker tick; ARGV: the
# channel, the key's lifetime in ms, "1" to tick whatever the key says.
# Returns the id published, or false (another worker ticked within the interval).
TICK_SCRIPT = """
if ARGV[3] ~= '1' and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return false
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = string.format('%.0f-0', ms)
local last = redis.call('HGET', KEYS[1], 'last')
if last then
  local lms = string.match(last, '^(%d+)-%d+$')
  if lms and tonumber(lms) >= ms then id = last end
end
redis.call('HSET', KEYS[1], 'last', id)
redis.call('PUBLISH', ARGV[1], '{"method":"tick","offset":"' .. id .. '"}')
return id
"""


class Ticks:
    """RedisQueueManager's ticks (with several partitions only)."""

    _tick_script: tuple[str, str] | None = None  # (text, SHA1), this pub/sub's

    def tick(self, force: bool = False) -> None:
        if (len(self.partitions) == 1 or self.write_only or self.log is None
                or not self.log.enabled):
            return
        if self._tick_script is None:
            script = self.pubsub_commands.script(TICK_SCRIPT)
            self._tick_script = script, hashlib.sha1(script.encode()).hexdigest()
        script, sha = self._tick_script
        args = (2, self.log.last_key, f"{self.channel}:tick", self.channel,
                int(TICK_INTERVAL * 1000), "1" if force else "0")
        client = self.publisher()
        try:
            try:
                client.evalsha(sha, *args)
            except NoScriptError:
                client.eval(script, *args)
        except RedisError as exc:  # (logged once per outage, with the publishes')
            self._publishing.failed(exc)
