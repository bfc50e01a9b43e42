"""The shared pacing state in Redis: key names, the Lua scripts, and reading their answers.

GCRA with reservation and no burst: Redis holds one number per token, the *theoretical arrival
time* (TAT). One script call reserves the slot ``max(now, TAT, paused_until)``, moves TAT one
interval past it and answers how long to wait, so one round trip buys one permit and the slots
of every process are an interval apart. Every time is the Redis server's own clock (``TIME``),
in integer microseconds (exact in a Lua double; ``%.0f`` keeps them from turning into
exponents): processes only receive durations, so hosts whose clocks disagree share one schedule.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from redis import exceptions as e

MICROS = 1_000_000

REDIS_ERRORS = (e.RedisError, OSError)
"""What a call to Redis may raise: see :func:`outage_like`. The store and the limiter both
sort these into an outage (go on without Redis) or a configuration to fix."""
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
    replica, ``maxmemory``, ``MISCONF``), so they wait in memory; a refused password or
    permission is a configuration to fix, never an outage in which the process goes on alone."""
    if isinstance(exc, _REFUSED):  # ConnectionErrors for redis-py
        return False
    return isinstance(exc, _OUTAGES) or (
        isinstance(exc, e.ResponseError) and str(exc).startswith("MISCONF")
    )


TOKEN_HASH_CHARS = 16
"""Hex characters of the token's keyed hash in key names: enough to keep tokens apart."""

# Keys: [1] TAT, [2] paused-until, [3] peers (member -> last acquire), [4] slots (the slots
#       handed out in the last two periods, scored by time: a request counted late by the
#       server may be in its window a period after its slot, see COUNT_SCRIPT).
# ARGV: [1] emission interval us, [2] period us, [3] member id,
#       [4] rejoin window us (0: not asked).
# A state further ahead than the peers' slots and one pause can explain (a failover to a replica
# whose clock is behind, anyone writing to a shared Redis) is reset to now: every process has at
# most one slot reserved, and no pause is longer than a period.
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
# while Redis is down add up to the plan). Apart from the peers that acquire, which the
# hand-back counts: a beat says a process is alive, not that it paces through Redis again.
HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', now - period))
redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000))
return redis.call('ZCARD', KEYS[1])
"""


def token_name(api_key: str) -> str:
    """The name one API token's keys (limiter and job store) go by: an HMAC keyed by the token,
    which no table of hashed leaked tokens matches.

    Example:
        >>> len(token_name("secret-token"))
        16
    """
    digest = hmac.new(api_key.encode("utf-8"), b"grok-imagine-async key names", hashlib.sha256)
    return digest.hexdigest()[:TOKEN_HASH_CHARS]


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """The keys of one token's pacing state, in one Redis Cluster hash tag (``{...}``) so that
    a script finds all of its keys on one node."""

    tat: str
    paused_until: str
    peers: str
    slots: str
    beats: str

    @classmethod
    def for_token(cls, api_key: str, *, prefix: str) -> RedisKeys:
        """Build the keys for ``api_key`` under ``prefix``."""
        base = f"{prefix}:{{{token_name(api_key)}}}"
        return cls(
            tat=f"{base}:tat",
            paused_until=f"{base}:paused",
            peers=f"{base}:peers",
            slots=f"{base}:slots",
            beats=f"{base}:beats",
        )


def to_micros(seconds: float) -> int:
    """Seconds as whole microseconds, rounded up so a wait is never cut short."""
    return max(0, -int(-seconds * MICROS // 1))


@dataclass(frozen=True, slots=True)
class Reservation:
    """What :data:`ACQUIRE_SCRIPT` answered.

    Attributes:
        delay: Seconds from the call until the reserved slot.
        pause_left: Seconds a server-ordered pause still runs (0 if none).
        peers: Limiter instances that acquired a permit for this token within the last period.
        sent_in_window: Slots of every process due within the last period, this one included.
        rejoined: Peers that acquired through Redis within the rejoin window asked for.
        reset: Whether the script found the state further ahead than the peers can explain
            and reset it.
    """

    delay: float
    pause_left: float
    peers: int
    sent_in_window: int
    rejoined: int = 0
    reset: bool = False

    @classmethod
    def parse(cls, raw: object) -> Reservation:
        """Read the script's reply (a list of six integers).

        Raises:
            ValueError: If the reply has another shape (someone else's data in our keys).
        """
        if not isinstance(raw, (list, tuple)) or len(raw) != 6:
            raise ValueError(f"unexpected reply from the acquire script: {raw!r}")
        delay, pause_left, peers, sent, rejoined, reset = (int(value) for value in raw)
        return cls(
            delay=delay / MICROS,
            pause_left=pause_left / MICROS,
            peers=max(1, peers),
            sent_in_window=sent,
            rejoined=rejoined,
            reset=bool(reset),
        )
