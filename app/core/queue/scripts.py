"""The Lua scripts of the queue, and reading their replies."""

from __future__ import annotations

import hashlib

# This run of Redis (INFO refused to the queue's user: "", restarts are told by the
# birth key alone), and the set's birth: false unless it belongs to this run, then the
# key as stored (an earlier run's, or false).
RUN_AND_BIRTH = """
local info = redis.pcall('INFO', 'server')
local run = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or ''
local function birth(key)
  local stored = redis.call('GET', key)
  if stored and string.sub(stored, 1, #run) == run then return stored, stored end
  return false, stored
end
"""


# Register this worker (when given) and return the live ones, on Redis's clock so that
# instances with skewed clocks agree: {now ms, the set's birth, added, member, score,
# ...}. A member's score is its last registration, which is also when it last read the
# set. The birth is "<Redis run id>:<ms>", renewed when the set starts anew or Redis
# was restarted (the run id changes; the key itself may come back from the AOF, or be
# on a promoted replica). A worker added anew loses its routing mark for this birth
# until it has registered its rooms again (app/core/queue/routes.py); the marks live
# as long as the set. KEYS: the set, its birth; ARGV: ttl ms, the marks' prefix,
# [host_id].
MEMBERS_SCRIPT = RUN_AND_BIRTH + """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[1])
local born, stored = birth(KEYS[2])
if stored and not born then
  redis.call('DEL', KEYS[1], KEYS[2])  -- the last run's: everyone registers again
end
local added = 0
if ARGV[3] then
  added = redis.call('ZADD', KEYS[1], ms, ARGV[3])
  if not born then
    born = run .. ':' .. ms
    redis.call('SET', KEYS[2], born)
  end
  local marks = ARGV[2] .. born
  if added == 1 then redis.call('SREM', marks, ARGV[3]) end
  redis.call('PEXPIRE', KEYS[1], ttl * 4)
  redis.call('PEXPIRE', KEYS[2], ttl * 4)
  redis.call('PEXPIRE', marks, ttl * 4)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - ttl)
return {ms, born or '', added, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
"""


# The set's birth as a publish sees it: "" if it belongs to an earlier run of Redis
# (restarted, and nobody has registered since). KEYS: the birth.
BORN_SCRIPT = RUN_AND_BIRTH + """
return birth(KEYS[1]) or ''
"""


BORN_SHA = hashlib.sha1(BORN_SCRIPT.encode()).hexdigest()


NOSCRIPT = object()  # a script Redis did not have: it did not run


def decoded(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


# Log an event and publish it, in one step (app/core/history.py): the entry gets the
# next global id, the published message carries it as its offset. A retried client_id
# (its once key is set) is published again with its first id, marked `again`
# (LoggedDelivery.deliver_logged); a retried batch (seq not above the publisher's
# last) without one, and receivers drop it by seq. A routed room's holders are read
# with it (app/core/queue/routes.py).
# KEYS: stream, log hash (last id, last seq per publisher), [holders, registered],
# [once key]. ARGV: channel, message head, tail, entry, maxlen, ttl ms, publisher, seq,
# once ttl ms, routed ("1": KEYS[3] and KEYS[4] are the room's holders and the workers
# registered since the set's birth: app/core/queue/routes.py).
# Returns {id ('' for a repeat), PUBLISH's count, the holders, the registered (or nil)}.
APPEND_SCRIPT = """
local routed = ARGV[10] == '1'
local once_key = KEYS[routed and 5 or 3]
local holders = routed and redis.call('SMEMBERS', KEYS[3])
local registered = routed and redis.call('SMEMBERS', KEYS[4])
local done = tonumber(redis.call('HGET', KEYS[2], ARGV[7]) or '0')
local once = once_key and redis.call('GET', once_key)
if once then  -- with its first id: receivers deliver it only where it is missing
  return {once, redis.call('PUBLISH', ARGV[1], ARGV[2] .. once .. '","again":true}'), holders,
          registered}
end
if tonumber(ARGV[8]) <= done then
  local plain = string.sub(ARGV[2], 1, #ARGV[2] - 11) .. '}'
  return {'', redis.call('PUBLISH', ARGV[1], plain), holders, registered}
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
local last = redis.call('HGET', KEYS[2], 'last')
if last then
  local lms, ln = string.match(last, '^(%d+)-(%d+)$')
  if ms <= tonumber(lms) then ms = tonumber(lms); n = tonumber(ln) + 1 end
end
local id = string.format('%.0f-%d', ms, n)
if not pcall(redis.call, 'XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], id, 'm', ARGV[4]) then
  -- the counter was lost (evicted) but not the stream: go on from the stream's top
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1][1]
  local tms, tn = string.match(top, '^(%d+)-(%d+)$')
  id = string.format('%.0f-%d', tonumber(tms), tonumber(tn) + 1)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], id, 'm', ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('HSET', KEYS[2], 'last', id, ARGV[7], ARGV[8])
if once_key then redis.call('SET', once_key, id, 'PX', ARGV[9]) end
return {id, redis.call('PUBLISH', ARGV[1], ARGV[2] .. id .. ARGV[3]), holders, registered}
"""


# A plain publish to a routed room, with its holders and the workers registered since
# the set's birth. KEYS: holders, registered; ARGV: channel, message.
ROUTE_SCRIPT = """
return {redis.call('PUBLISH', ARGV[1], ARGV[2]), redis.call('SMEMBERS', KEYS[1]),
        redis.call('SMEMBERS', KEYS[2])}
"""


OFFSET_FIELD = ',"offset":"'  # 11 characters: APPEND_SCRIPT strips them


class PublishScripts:
    """APPEND_SCRIPT and ROUTE_SCRIPT with the publishes of a kind of pub/sub
    (app/core/queue/pubsub.py), and their SHA1s."""

    def __init__(self, pubsub) -> None:
        self.append = pubsub.script(APPEND_SCRIPT)
        self.route = pubsub.script(ROUTE_SCRIPT)
        self.append_sha = hashlib.sha1(self.append.encode()).hexdigest()
        self.route_sha = hashlib.sha1(self.route.encode()).hexdigest()
