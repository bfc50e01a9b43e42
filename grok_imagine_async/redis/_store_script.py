"""The shared job store's state in Redis: key names and Lua scripts (no I/O).

Every change to a job is one script, so the owner check (the owner field is the fencing token),
the record, the owner's set of unfinished jobs, the shared credit count and the ``PUBLISH`` to
every other process happen at once or not at all. A process owns jobs while its ``alive`` key,
renewed at each heartbeat, has not expired; a job whose owner's key expired is *orphaned*, and
whoever claims it first owns it from then on.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._script import token_name

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
# Returns: {status, record JSON or '', owner or ''} with status 'unknown', 'created'
#          (unknown, now the claimer's), 'mine', 'foreign' (its owner is alive), 'adopted' (its
#          owner was gone: now the claimer's), 'final' (finished: nobody needs to own it) or
#          'reopened' (finished, and the claimer's again).
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
# spend should it stop answering (offline spending is never more than was reserved).
# Keys: [1] credits committed, [2] the reserves hash (owner -> credits held).
# ARGV: [1] owner id, [2] credits spent from the reserve while Redis was away (their POSTs
#       have been written back since, each counted again: that much is given back),
#       [3] the most to hold, [4] the budget, [5] processes sharing what is left.
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


class StoreKeys:
    """The keys and channel of one token's (and namespace's) job store, under one Redis Cluster
    hash tag so that each script finds its keys on one node."""

    def __init__(self, api_key: str, *, prefix: str, namespace: str) -> None:
        self.base = base = f"{prefix}:{{{token_name(api_key)}:{namespace}}}"
        self.alive = f"{base}:alive:"  # + owner id: expires unless its process renews it
        self.owned = f"{base}:owned:"  # + owner id: the set of its unfinished jobs
        self.owners = f"{base}:owners"  # the processes that may own unfinished jobs
        self.credits = f"{base}:credits"  # credits committed by every process (the budget)
        self.reserves = f"{base}:reserves"  # owner id -> credits set aside for an outage
        self.epoch = f"{base}:epoch"  # set once: another value means Redis lost its data
        self.meta = f"{base}:meta"  # small named values (set_meta)
        self.channel = f"{base}:events"  # every change of a job

    def job(self, key: str) -> str:
        """The hash holding one job."""
        return f"{self.base}:job:{key}"


@dataclass(frozen=True, slots=True)
class RedisStoreStatistics:
    """A snapshot of a :class:`RedisJobStore`'s counters.

    Attributes:
        redis_calls: Commands and scripts sent to Redis.
        available: False while Redis cannot be reached (writes wait in memory).
        pending_writes: Jobs whose latest state waits to be written back.
        outages: Times Redis became unreachable.
        adopted: Jobs this process took over from processes that stopped.
        refused_writes: Writes refused because another process owns the job now.
    """

    redis_calls: int
    available: bool
    pending_writes: int
    outages: int
    adopted: int
    refused_writes: int
