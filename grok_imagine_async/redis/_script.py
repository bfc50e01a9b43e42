"""What the limiter and the job store share: their Lua scripts, errors, client, key names.

Times are the Redis server's (``TIME``), in integer microseconds (``%.0f`` keeps them from
turning into exponents), so hosts whose clocks disagree share one schedule. Each change to a
job is one script: the owner check (the owner field is the fencing token), the record, the
owner's set, the credits and the ``PUBLISH`` happen at once or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as e
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from .._errors import ConfigurationError
from .._redact import redact_url

MICROS = 1_000_000

POOL_SIZE = 64  # connections of a client opened from a URL (a store's listener holds one)
POOL_WAIT = 5.0  # seconds a call waits for a free one before Redis counts as unreachable
REDIS_ERRORS = (e.RedisError, OSError)  # what a call may raise: see outage_like
# No outage, though redis-py raises some as ConnectionErrors.
_REFUSED = (e.AuthenticationError, e.AuthorizationError, e.NoPermissionError)
_OUTAGES = (
    e.ConnectionError,  # BusyLoadingError too (a restarting server)
    e.TimeoutError,
    e.ReadOnlyError,
    e.ClusterDownError,
    e.TryAgainError,
    e.OutOfMemoryError,
    OSError,
)


def outage_like(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis cannot take our writes *for now* (unreachable, loading, a
    replica, ``maxmemory``, ``MISCONF``); a refused password or permission is no outage."""
    misconf = isinstance(exc, e.ResponseError) and str(exc).startswith("MISCONF")
    return not isinstance(exc, _REFUSED) and (misconf or isinstance(exc, _OUTAGES))


def _timed(body: str) -> str:
    """The script ``body`` with the server's time read first, as ``now``."""
    return "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1e6 + tonumber(t[2])" + body


# GCRA with reservation and no burst: reserves the slot max(now, TAT, paused-until) and moves
# the theoretical arrival time (TAT) one interval on; a state further ahead than the peers'
# slots and one pause explain (a replica whose clock is behind, another writer) is reset.
# KEYS: TAT, paused-until, peers (member -> last acquire), slots of the last two periods.
# ARGV: interval us, period us, member id, rejoin window us (0: not asked).
# Returns: {delay us until the slot, pause left us, peers, slots due in the last period,
#           peers that acquired within the rejoin window, 1 if the state was reset}.
ACQUIRE_SCRIPT = _timed("""
local interval, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local peers = redis.call('ZCOUNT', KEYS[3], string.format('%.0f', now - period), '+inf')
local bound = now + period + (peers + 1) * interval
local slot, reset = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0')), 0
if slot > bound then slot, reset = now, 1 end
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now + period then
  redis.call('DEL', KEYS[2])
  paused, reset = 0, 1
end
local pause_left = math.max(0, paused - now)
slot = math.max(slot, paused)
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
local rejoin, rejoined = tonumber(ARGV[4]), 0
if rejoin > 0 then
  rejoined = redis.call('ZCOUNT', KEYS[3], string.format('%.0f', now - rejoin), '+inf')
end
return {slot - now, pause_left, redis.call('ZCARD', KEYS[3]), sent, rejoined, reset}
""")

# Every process pauses (a 429, a full window). KEYS: paused-until. ARGV: pause us.
# Returns: {pause left us}.
OBSERVE_SCRIPT = _timed("""
local paused, pause = tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1])
if now + pause > paused then
  paused = now + pause
  redis.call('SET', KEYS[1], string.format('%.0f', paused), 'PX', math.ceil(pause / 1000) + 1)
end
return {paused - now}
""")


# The slots of every process due within the lookback (those a server counting late may have
# counted with an answer). KEYS: slots. ARGV: lookback us (two periods at most).
COUNT_SCRIPT = _timed("""
local since = string.format('(%.0f', now - tonumber(ARGV[1]))
return redis.call('ZCOUNT', KEYS[1], since, string.format('%.0f', now))
""")

# The processes that beat within the last period, busy or idle (their fallback shares must
# add up to the plan). KEYS: beats (member -> last beat). ARGV: period us, member id.
LIMITER_HEARTBEAT_SCRIPT = _timed("""
local period = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', now - period))
redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000))
return redis.call('ZCARD', KEYS[1])
""")


# The job store's scripts all take the same keys and first arguments (RedisJobStore._script):
# KEYS: 1 the job's hash (owner, record, the attempt whose credits are reserved), 2 this
#   process's unfinished jobs, 3 the processes that may own some, 4 the epoch (set once: another
#   value means Redis lost its data), 5 the credits every process committed (the budget), 6
#   owner id -> credits set aside for an outage, 7 this process's alive key (expires unless
#   renewed). ARGV: 1 this process's owner id, 2 the alive-key prefix, 3 the owned-set prefix
#   (+ owner id), 4 the channel of every change of a job; then each script's own.

# ARGV: 5 record JSON, 6 1 if final, 7 credits to reserve, 8 budget (-1: none), 9 credits of
#       the reserved attempt to give back (0..40: what the provider did not charge; given once,
#       settling the reservation), 10 the attempt reserved for, 11 1 to create only, 12 ms
#       a finished job is kept, 13 an attempt the one reserved for replaces (its task failed),
#       14 credits of it to give back (0..40: what the provider did not charge; given only
#       while its reservation is the job's, which goes with them: once, however often the
#       script runs), before the reservation (a budget refusal writes nothing), 15 the epoch
#       known (another means Redis lost its data: nothing is written, 'epoch' answered, so no
#       job is counted from nothing before it is written back).
# The job's 'reserved' is the attempt whose credits the budget counts, negated once settled (a
# refund given, or the job's end written): still counted, so a write run again (resent, or
# written back twice) reserves nothing more, and nothing more goes back.
# Returns: {'ok' | 'owner' (another owns it) | 'budget' | 'exists' | 'epoch', credits spent if
#          'budget'}.
WRITE_SCRIPT = """
if redis.call('GET', KEYS[4]) ~= ARGV[15] then return {'epoch', 0} end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and ARGV[11] == '1' then
  -- This very write run again (redis-py resends a script whose answer timed out): done.
  if owner == ARGV[1] and redis.call('HGET', KEYS[1], 'record') == ARGV[5] then return {'ok', 0} end
  return {'exists', 0}
end
if owner and owner ~= ARGV[1] then return {'owner', 0} end
local held = tonumber(redis.call('HGET', KEYS[1], 'reserved') or 0)
local replaced = 0
if held > 0 and held == tonumber(ARGV[13]) then replaced = tonumber(ARGV[14]) end
local reserve = tonumber(ARGV[7])
if reserve > 0 and math.abs(held) < tonumber(ARGV[10]) then
  local spent, budget = tonumber(redis.call('GET', KEYS[5]) or '0') - replaced, tonumber(ARGV[8])
  if budget >= 0 and spent + reserve > budget then return {'budget', spent} end
else
  reserve = 0
end
if replaced > 0 then
  redis.call('DECRBY', KEYS[5], replaced)
  redis.call('HDEL', KEYS[1], 'reserved')
end
if reserve > 0 then
  redis.call('INCRBY', KEYS[5], reserve)
  redis.call('HSET', KEYS[1], 'reserved', ARGV[10])
end
local refund, counted = tonumber(ARGV[9]), tonumber(redis.call('HGET', KEYS[1], 'reserved') or 0)
if counted > 0 and (refund > 0 or ARGV[6] == '1') then
  if refund > 0 then redis.call('DECRBY', KEYS[5], refund) end
  redis.call('HSET', KEYS[1], 'reserved', -counted)
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'record', ARGV[5])
if ARGV[6] == '1' then
  redis.call('SREM', KEYS[2], KEYS[1])
  if tonumber(ARGV[12]) > 0 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[12])) end
else
  redis.call('SADD', KEYS[2], KEYS[1])
end
redis.call('PUBLISH', ARGV[4], cjson.encode({ARGV[1], ARGV[5]}))
return {'ok', 0}
"""

# A job whose owner's alive key expired goes to whoever claims it first. A changed epoch means
# Redis lost its data: a job unknown now may have been paid, so nothing is claimed ('epoch').
# ARGV: 5 a queued record to create it with ('': do not), 6 the epoch known, 7 '1' to take a
#       finished job back. Returns: {a ClaimStatus or 'epoch', record JSON or '', owner or ''}.
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
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'record', record)
redis.call('PUBLISH', ARGV[4], cjson.encode({ARGV[1], record}))
return {status, record, ARGV[1]}
"""

# Takes the jobs of owners whose alive key expired; returns their records. ARGV: 5 most jobs, 6
# this call's id (run again, as redis-py resends a script whose answer timed out, it answers the
# jobs it took the first time: they are this process's now, and it must know them).
ORPHANS_SCRIPT = """
local memo = KEYS[2] .. ':adopted'
if redis.call('HGET', memo, 'call') == ARGV[6] then
  return cjson.decode(redis.call('HGET', memo, 'taken'))
end
local taken, most = {}, tonumber(ARGV[5])
for _, owner in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if owner ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. owner) == 0 then
    local owned = ARGV[3] .. owner
    for _, job in ipairs(redis.call('SRANDMEMBER', owned, most - #taken)) do
      redis.call('SMOVE', owned, KEYS[2], job)
      redis.call('HSET', job, 'owner', ARGV[1])
      table.insert(taken, redis.call('HGET', job, 'record') or '')
    end
    if redis.call('SCARD', owned) == 0 then redis.call('SREM', KEYS[3], owner) end
    if #taken >= most then break end
  end
end
if #taken > 0 then
  redis.call('HSET', memo, 'call', ARGV[6], 'taken', cjson.encode(taken))
  redis.call('PEXPIRE', memo, 60000)
end
return taken
"""

# ARGV: 5 lease ms, 6 a new epoch should there be none, 7 '1' to give back the reserves of
# processes gone. Returns the epoch (new if Redis lost its data).
HEARTBEAT_SCRIPT = """
redis.call('SET', KEYS[7], '1', 'PX', tonumber(ARGV[5]))
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SET', KEYS[4], ARGV[6], 'NX')
local epoch = redis.call('GET', KEYS[4])
if ARGV[7] == '1' then
  local held = redis.call('HGETALL', KEYS[6])
  for i = 1, #held, 2 do
    if redis.call('EXISTS', ARGV[2] .. held[i]) == 0 then
      redis.call('DECRBY', KEYS[5], tonumber(held[i + 1]))
      redis.call('HDEL', KEYS[6], held[i])
    end
  end
end
return epoch
"""

# The credits one process sets aside in the shared count, to spend should Redis stop
# answering, shared with the processes that may own jobs (and the limiter's peers). ARGV: 5
# credits spent from it offline (counted since: given back), 6 the most to hold, 7 the budget, 8
# the limiter's peers. Returns the credits held now (a multiple of a POST's).
RESERVE_SCRIPT = """
local before = tonumber(redis.call('HGET', KEYS[6], ARGV[1]) or '0')
local held = before - math.min(before, tonumber(ARGV[5]))
local spent = tonumber(redis.call('GET', KEYS[5]) or '0') - before + held
local sharing = math.max(1, tonumber(ARGV[8]), redis.call('SCARD', KEYS[3]))
local share = math.floor((tonumber(ARGV[7]) - spent + held) / sharing)
local target = math.min(tonumber(ARGV[6]), math.max(0, share))
target = target - target % 40
if target > held then
  local grant = math.min(target - held, tonumber(ARGV[7]) - spent)
  target = held + math.max(0, grant - grant % 40)
end
if target ~= before then redis.call('INCRBY', KEYS[5], target - before) end
if target > 0 then
  redis.call('HSET', KEYS[6], ARGV[1], target)
else
  redis.call('HDEL', KEYS[6], ARGV[1])
end
return target
"""


class Connected:
    """What the limiter and the job store share: a Redis client, from a URL (then theirs, closed
    by :meth:`aclose`) or the caller's, named by ``_where`` without a password; the calls sent,
    and the scripts run (:meth:`_run`)."""

    def _connect(
        self, redis: str | aioredis.Redis, api_key: str, key_prefix: str, tag: str = ""
    ) -> str:
        """Take ``redis``; the keys' base name: ``key_prefix`` and a Redis Cluster hash tag (so
        each script finds its keys on one node) naming the token, never showing it."""
        if not api_key:
            raise ConfigurationError(f"{type(self).__name__} needs the api_key whose keys it uses")
        self._owns_client = isinstance(redis, str)
        self._where = f"Redis at {redact_url(redis)}" if isinstance(redis, str) else "Redis"
        if isinstance(redis, str):
            # A bounded pool that waits for a free connection (redis-py's default raises under a
            # burst: no outage), with one retry of a connection left stale.
            pool = aioredis.BlockingConnectionPool.from_url(
                redis,
                max_connections=POOL_SIZE,
                timeout=POOL_WAIT,
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
                retry=Retry(NoBackoff(), 1),
            )
            redis = aioredis.Redis.from_pool(pool)  # it closes the pool too
        self._redis = redis
        self._calls = 0
        self._scripts: dict[str, AsyncScript] = {}
        return f"{key_prefix}:{{{token_name(api_key)}{tag}}}"

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` (sent once, then called by its digest)."""
        self._calls += 1
        if (found := self._scripts.get(script)) is None:
            found = self._scripts[script] = self._redis.register_script(script)
        return await found(keys=keys, args=args)

    def _failure(self, what: str, exc: BaseException) -> str:
        """What ``exc`` means for ``what``: Redis unreachable for now, or refusing it."""
        if outage_like(exc):
            return f"cannot reach {self._where} to {what} ({type(exc).__name__})"
        return f"{self._where} refused to {what}: {type(exc).__name__}: {exc}"

    async def aclose(self) -> None:
        """Close the Redis connection if it was opened from a URL."""
        if self._owns_client:
            await self._redis.aclose()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def token_name(api_key: str) -> str:
    """The name one API token's keys go by: an HMAC keyed by the token, which no table of
    hashed leaked tokens matches."""
    digest = hmac.new(api_key.encode("utf-8"), b"grok-imagine-async key names", hashlib.sha256)
    return digest.hexdigest()[:16]


def to_micros(seconds: float) -> int:
    """Seconds as whole microseconds, rounded up so a wait is never cut short."""
    return max(0, -int(-seconds * MICROS // 1))
