"""What the limiter and the job store share: their Lua scripts, key names, errors, client.

The limiter's schedule is GCRA with reservation and no burst: Redis holds the *theoretical
arrival time* (TAT) of one token; one script call reserves the slot ``max(now, TAT,
paused_until)`` and moves TAT one interval on. Times are the Redis server's (``TIME``), in
integer microseconds (``%.0f`` keeps them from turning into exponents), so hosts whose clocks
disagree share one schedule. Each change to a job is one script, so the owner check (the owner
field is the fencing token), the record, the owner's set, the credit count and the ``PUBLISH``
happen at once or not at all; a job whose owner's ``alive`` key expired is adopted by whoever
claims it first.
"""

from __future__ import annotations

import hashlib
import hmac

import redis.asyncio as aioredis
from redis import exceptions as e
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .._redact import redact_url

MICROS = 1_000_000

POOL_SIZE = 64  # connections of a client opened from a URL (a store's listener holds one)
POOL_WAIT = 5.0  # seconds a call waits for a free one before Redis counts as unreachable
REDIS_ERRORS = (e.RedisError, OSError)  # what a call may raise: see outage_like
_REFUSED = (e.AuthenticationError, e.AuthorizationError, e.NoPermissionError)  # no outage
_OUTAGES = (
    e.ConnectionError,  # BusyLoadingError too (a restarting server)
    e.TimeoutError,
    e.ReadOnlyError,
    e.ClusterDownError,
    e.TryAgainError,
    e.MasterDownError,
    e.OutOfMemoryError,
    OSError,
)


def outage_like(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis cannot take our writes *for now* (unreachable, loading, a
    replica, ``maxmemory``, ``MISCONF``); a refused password or permission is no outage."""
    if isinstance(exc, _REFUSED):  # ConnectionErrors for redis-py
        return False
    return isinstance(exc, _OUTAGES) or (
        isinstance(exc, e.ResponseError) and str(exc).startswith("MISCONF")
    )


# Keys: [1] TAT, [2] paused-until, [3] peers (member -> last acquire), [4] slots (the slots
#       handed out in the last two periods, scored by time: a request counted late by the
#       server may be in its window a period after its slot, see COUNT_SCRIPT).
# ARGV: [1] emission interval us, [2] period us, [3] member id,
#       [4] rejoin window us (0: not asked).
# A state further ahead than the peers' slots and one pause explain (a failover to a replica
# whose clock is behind, another writer) is reset to now.
# Returns: {delay us until the reserved slot, pause remaining us, active peers,
#           slots due within the last period, peers that acquired within the rejoin window,
#           1 if a far-future state was reset else 0}.
ACQUIRE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local peers = redis.call('ZCOUNT', KEYS[3], string.format('%.0f', now - period), '+inf')
local bound = now + period + (peers + 1) * interval
local reset = 0
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
if slot > bound then
  slot = now
  reset = 1
end
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now + period then
  redis.call('DEL', KEYS[2])
  paused = 0
  reset = 1
end
local pause_left = 0
if paused > now then
  pause_left = paused - now
  if paused > slot then slot = paused end
end
local tat = slot + interval
local ttl = math.ceil((tat - now + period) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
local old = string.format('(%.0f', now - period)
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', old)
redis.call('PEXPIRE', KEYS[3], math.ceil(period / 1000))
redis.call('ZADD', KEYS[4], slot, string.format('%.0f', slot))
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('(%.0f', now - 2 * period))
redis.call('PEXPIRE', KEYS[4], ttl + math.ceil(period / 1000))
local sent = redis.call('ZCOUNT', KEYS[4], old, now)
local rejoin = tonumber(ARGV[4])
local rejoined = 0
if rejoin > 0 then
  rejoined = redis.call('ZCOUNT', KEYS[3], string.format('%.0f', now - rejoin), '+inf')
end
return {slot - now, pause_left, redis.call('ZCARD', KEYS[3]), sent, rejoined, reset}
"""

# Keys: [1] paused-until. ARGV: [1] pause us.
# Every process pauses until then (a 429, a full window): the feedback interpreter decided it.
# Returns: {pause remaining us, 1 if this call started or extended the pause else 0}.
OBSERVE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
local extended = 0
local until_us = now + tonumber(ARGV[1])
if until_us > paused then
  paused = until_us
  extended = 1
  redis.call('SET', KEYS[1], string.format('%.0f', paused), 'PX',
             math.ceil((paused - now) / 1000) + 1)
end
return {math.max(0, paused - now), extended}
"""


# Keys: [1] slots. ARGV: [1] lookback us.
# Returns: the slots of every process due within the lookback (at most two periods are kept):
# those a server counting late may have counted with an answer.
COUNT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local since = string.format('(%.0f', now - tonumber(ARGV[1]))
return redis.call('ZCOUNT', KEYS[1], since, string.format('%.0f', now))
"""

# Keys: [1] beats (member -> last heartbeat). ARGV: [1] period us, [2] member id.
# Returns: processes that beat within the last period, busy or idle (so that the shares taken
# while Redis is down add up to the plan).
LIMITER_HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', now - period))
redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000))
return redis.call('ZCARD', KEYS[1])
"""


# Keys: [1] the job's hash, [2] the owner's set of unfinished jobs, [3] credits committed.
# ARGV: [1] owner id, [2] record JSON, [3] 1 if the record is final, [4] credits to reserve
#       (0: none), [5] the budget (-1: none), [6] credits to refund (0: none), [7] channel,
#       [8] attempt this reservation is for, [9] 1 to create only (refuse an existing job),
#       [10] ms a finished job is kept (0: forever).
# Returns: {status, version} with status 'ok', 'owner' (someone else owns the job),
#          'budget' (the reservation would pass the budget) or 'exists'.
WRITE_SCRIPT = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and ARGV[9] == '1' then return {'exists', 0} end
if owner and owner ~= ARGV[1] then return {'owner', 0} end
local reserve = tonumber(ARGV[4])
if reserve > 0 then
  local reserved_for = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
  if reserved_for < tonumber(ARGV[8]) then
    local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
    local budget = tonumber(ARGV[5])
    if budget >= 0 and spent + reserve > budget then return {'budget', spent} end
    redis.call('INCRBY', KEYS[3], reserve)
    redis.call('HSET', KEYS[1], 'reserved', ARGV[8])
  end
end
local refund = tonumber(ARGV[6])
if refund > 0 and redis.call('HGET', KEYS[1], 'reserved') then
  redis.call('DECRBY', KEYS[3], refund)
  redis.call('HDEL', KEYS[1], 'reserved')
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'record', ARGV[2])
if ARGV[3] == '1' then
  redis.call('SREM', KEYS[2], KEYS[1])
  if tonumber(ARGV[10]) > 0 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[10])) end
else
  redis.call('SADD', KEYS[2], KEYS[1])
end
redis.call('PUBLISH', ARGV[7], cjson.encode({ARGV[1], version, ARGV[2]}))
return {'ok', version}
"""

# Keys: [1] the job's hash, [2] the claimer's owned set, [3] the owners set, [4] the epoch.
# ARGV: [1] claimer id, [2] alive-key prefix, [3] owned-set prefix, [4] channel,
#       [5] a queued record to create the job with if unknown ('' : do not create),
#       [6] the epoch the claimer knows, [7] '1' to take a finished job back ('reopened': its
#       next POST's credits are reserved afresh).
# An epoch that changed means Redis lost its data: a job unknown now may have existed (and
# been paid), so nothing is claimed ('epoch') until every process has had time to write back.
# Returns: {status (a ClaimStatus, or 'epoch'), record JSON or '', owner or ''}.
CLAIM_SCRIPT = """
local epoch = redis.call('GET', KEYS[4])
if epoch ~= ARGV[6] then return {'epoch', '', ''} end
local owner = redis.call('HGET', KEYS[1], 'owner')
local record = redis.call('HGET', KEYS[1], 'record') or ARGV[5]
local status = 'adopted'
if not owner then
  if ARGV[5] == '' then return {'unknown', '', ''} end
  status = 'created'
elseif owner == ARGV[1] then
  return {'mine', record, owner}
elseif redis.call('SISMEMBER', ARGV[3] .. owner, KEYS[1]) == 0 then
  if ARGV[7] ~= '1' then return {'final', record, owner} end
  redis.call('PERSIST', KEYS[1])
  redis.call('HDEL', KEYS[1], 'reserved')
  status = 'reopened'
elseif redis.call('EXISTS', ARGV[2] .. owner) == 1 then
  return {'foreign', record, owner}
else
  redis.call('SREM', ARGV[3] .. owner, KEYS[1])
end
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('SADD', KEYS[3], ARGV[1])
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'record', record)
redis.call('PUBLISH', ARGV[4], cjson.encode({ARGV[1], version, record}))
return {status, record, ARGV[1]}
"""

# Keys: [1] the owners set, [2] the claimer's owned set.
# ARGV: [1] claimer id, [2] alive-key prefix, [3] owned-set prefix, [4] most jobs to take.
# Returns: the records ('' : none) of the jobs now owned by the claimer, taken from owners
#          whose key expired.
ORPHANS_SCRIPT = """
local taken = {}
local most = tonumber(ARGV[4])
for _, owner in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if owner ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. owner) == 0 then
    local owned = ARGV[3] .. owner
    for _, job in ipairs(redis.call('SRANDMEMBER', owned, most - #taken)) do
      redis.call('SMOVE', owned, KEYS[2], job)
      redis.call('HSET', job, 'owner', ARGV[1])
      redis.call('HINCRBY', job, 'version', 1)
      table.insert(taken, redis.call('HGET', job, 'record') or '')
    end
    if redis.call('SCARD', owned) == 0 then redis.call('SREM', KEYS[1], owner) end
    if #taken >= most then break end
  end
end
return taken
"""

# Keys: [1] this process's alive key, [2] the owners set, [3] the epoch, [4] the reserves
#       hash, [5] credits committed.
# ARGV: [1] owner id, [2] lease ms, [3] a new epoch, should the key space be empty,
#       [4] alive-key prefix, [5] '1' to give back the reserves of processes gone.
# Returns: the epoch (a server that lost its data answers a new one).
HEARTBEAT_SCRIPT = """
redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[2]))
redis.call('SADD', KEYS[2], ARGV[1])
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  redis.call('SET', KEYS[3], ARGV[3])
  epoch = ARGV[3]
end
if ARGV[5] == '1' then
  local held = redis.call('HGETALL', KEYS[4])
  for i = 1, #held, 2 do
    if redis.call('EXISTS', ARGV[4] .. held[i]) == 0 then
      redis.call('DECRBY', KEYS[5], tonumber(held[i + 1]))
      redis.call('HDEL', KEYS[4], held[i])
    end
  end
end
return epoch
"""

# The reserve: credits one process sets aside in the shared count while Redis answers, to
# spend should it stop answering. Keys: [1] credits committed, [2] reserves (owner -> held).
# ARGV: [1] owner id, [2] credits spent from it while Redis was away (written back and counted
#       since: given back), [3] the most to hold, [4] the budget, [5] processes sharing the rest.
# Returns: the credits held now (a multiple of the cost of a POST).
RESERVE_SCRIPT = """
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local back = math.min(held, tonumber(ARGV[2]))
if back > 0 then
  redis.call('DECRBY', KEYS[1], back)
  held = held - back
end
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local share = math.floor((tonumber(ARGV[4]) - spent + held) / math.max(1, tonumber(ARGV[5])))
local target = math.min(tonumber(ARGV[3]), math.max(0, share))
target = target - target % 40
if target > held then
  local grant = math.min(target - held, tonumber(ARGV[4]) - spent)
  grant = grant - grant % 40
  if grant > 0 then
    redis.call('INCRBY', KEYS[1], grant)
    held = held + grant
  end
elseif target < held then
  redis.call('DECRBY', KEYS[1], held - target)
  held = target
end
if held > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], held)
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return held
"""


def connect(redis: str | aioredis.Redis) -> tuple[aioredis.Redis, bool, str]:
    """A client for ``redis``, whether the caller owns (and closes) it, and the URL without its
    password ("" for a client given): a bounded pool that waits for a free connection
    (redis-py's default raises under a burst, which would pass for an outage), and one quick
    retry for a connection that a Redis restart left stale."""
    if not isinstance(redis, str):
        return redis, False, ""
    pool = aioredis.BlockingConnectionPool.from_url(
        redis,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 1),
    )
    return aioredis.Redis.from_pool(pool), True, redact_url(redis)  # it closes the pool too


def token_name(api_key: str) -> str:
    """The name one API token's keys go by: an HMAC keyed by the token, which no table of
    hashed leaked tokens matches."""
    digest = hmac.new(api_key.encode("utf-8"), b"grok-imagine-async key names", hashlib.sha256)
    return digest.hexdigest()[:16]


def to_micros(seconds: float) -> int:
    """Seconds as whole microseconds, rounded up so a wait is never cut short."""
    return max(0, -int(-seconds * MICROS // 1))
