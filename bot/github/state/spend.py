"""Spend across runs: what a pull request's runs and an installation's runs today have cost, in Redis.

`budget.max_cost_usd` bounds one run; `max_cost_usd_per_pull_request` and `max_cost_usd_per_day` (both
from the base branch) bound the sum. A run reserves its estimate before its first call, atomically
against both caps (two runs starting together cannot both take the last dollars), and settles to what
it really spent when it ends. A run that crashed keeps its reservation: spend that cannot be told is
counted, never forgotten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bot.pipeline.budget import SpendCaps
from bot.pipeline.config import Budget
from bot.pipeline.run import Report

PULL_SPEND_KEY = "evalbot:spend:pull:{repo}:{pr}"
DAY_SPEND_KEY = "evalbot:spend:day:{installation}:{day}"
# A pull request's sum lives as long as a pull request may stay open; a day's until the next has begun.
PULL_SPEND_TTL_S = 90 * 24 * 3600
DAY_SPEND_TTL_S = 2 * 24 * 3600

# KEYS: pull request, day. ARGV: amount, pull request cap, day cap, TTLs. Reserves `amount` on both
# when both stay within their caps; returns {reserved 0/1, pull request spent, day spent} (before).
_RESERVE = """
local pull = tonumber(redis.call('GET', KEYS[1]) or '0')
local day = tonumber(redis.call('GET', KEYS[2]) or '0')
local amount = tonumber(ARGV[1])
local ok = 0
if pull + amount <= tonumber(ARGV[2]) and day + amount <= tonumber(ARGV[3]) then
  redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  ok = 1
end
return {ok, tostring(pull), tostring(day)}
"""


@dataclass
class Ledger:
    """One run's place in the spend of its pull request and of its installation's day (UTC)."""

    redis: Any
    pull_key: str
    day_key: str
    budget: Budget
    reserved_usd: float = 0.0

    @classmethod
    def of(cls, redis: Any, repo: str, pr: int | str, installation_id: int, budget: Budget) -> Ledger:
        """The ledger of a run of pull request `pr` (or of another scope, such as a scheduled firing, whose
        runs the per-pull-request cap then bounds together)."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        return cls(
            redis,
            PULL_SPEND_KEY.format(repo=repo, pr=pr),
            DAY_SPEND_KEY.format(installation=installation_id, day=day),
            budget,
        )

    async def reserve(self, amount_usd: float) -> SpendCaps:
        """Reserve `amount_usd` when both caps leave room for it; the caps as they stood before."""
        caps = self.budget.max_cost_usd_per_pull_request, self.budget.max_cost_usd_per_day
        ttls = PULL_SPEND_TTL_S, DAY_SPEND_TTL_S
        ok, pull, day = await self.redis.eval(
            _RESERVE, 2, self.pull_key, self.day_key, repr(amount_usd), *map(repr, caps), *ttls
        )
        if int(ok):
            self.reserved_usd = amount_usd
        return SpendCaps(float(pull), caps[0], float(day), caps[1], reserved=bool(int(ok)))

    async def settle(self, spent_usd: float) -> None:
        """Replace the reservation by what the run really spent."""
        if self.reserved_usd == 0 and spent_usd == 0:
            return
        delta = repr(spent_usd - self.reserved_usd)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incrbyfloat(self.pull_key, delta)
            pipe.expire(self.pull_key, PULL_SPEND_TTL_S)
            pipe.incrbyfloat(self.day_key, delta)
            pipe.expire(self.day_key, DAY_SPEND_TTL_S)
            await pipe.execute()
        self.reserved_usd = spent_usd


def spent_usd(report: Report) -> float:
    """What a run really spent: calls under test, judges and adversarial attacks."""
    spend = report.spend
    return 0.0 if spend is None else spend.under_test_usd + spend.judge_usd + spend.attack_usd
