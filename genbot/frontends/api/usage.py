"""Daily character quotas of API keys (scope "key"), through the shared quota policy.

A request is admitted before it starts (``QuotaExceeded`` → 429 with Retry-After): the admission
reserves its length, or what the key has left today if that is less, and the request is capped
at what was reserved. When it ends — completed, cancelled by a client that left, or failed — the
characters it produced are charged and the rest of the reservation is given back. The counts live
in the database, so several API replicas share one limit. Usage is recorded for keys that have a limit.
"""

from __future__ import annotations

import asyncio

from genbot.frontends.api.auth import Caller
from genbot.frontends.api.context import ApiContext
from genbot.quotas.policy import Admission, Limits, Subject
from genbot.service import Generation, GenerationRequest, ResolvedRequest


async def start_generation(ctx: ApiContext, request: GenerationRequest, who: Caller) -> Generation:
    """Admit ``who`` under its quota, then start the generation; its characters are charged when it ends."""
    subject = Subject("key", who.key_id, Limits(chars_per_day=ctx.settings.daily_chars or None))
    limits = await ctx.service.quotas.limits(subject)
    if not (limits.chars_per_day or limits.concurrent or limits.cooldown_s):
        # No limit to enforce: skip the two usage writes per request (they queue behind every
        # other write on SQLite and would sit between the request and its first character).
        return await ctx.service.generate(request)
    # Read the preset and the continued generation once (someone else's: NotFound before admission),
    # so the characters reserved are those of what then runs.
    resolved = await ctx.service.resolve(request)
    admission = await ctx.service.quotas.admit([subject], chars=_wanted(ctx, resolved.request))
    try:
        gen = await ctx.service.generate(_capped(resolved, admission.remaining_chars))
    except BaseException:
        await admission.finish(0)  # refused before anything ran: nothing to charge
        raise
    charge = asyncio.create_task(_charge_when_done(gen, admission), name=f"genbot-api-charge-{gen.id}")
    ctx.background.add(charge)
    charge.add_done_callback(ctx.background.discard)
    return gen


def _wanted(ctx: ApiContext, request: GenerationRequest) -> int:
    """The characters to reserve: the length asked for (or a preset's, or the parent's), else the default."""
    wanted = request.length if request.length is not None else ctx.service.settings.sampling.length
    return max(1, wanted)  # a length the service refuses is refunded by finish(0)


def _capped(resolved: ResolvedRequest, reserved: int | None) -> ResolvedRequest:
    """``resolved`` with its length cut to the characters reserved for it."""
    if reserved is None:
        return resolved
    wanted = resolved.request.length if resolved.request.length is not None else reserved
    return resolved.with_length(max(1, min(wanted, reserved)))


async def _charge_when_done(gen: Generation, admission: Admission) -> None:
    """Charge the characters generated once the row is written."""
    try:
        result = await gen.result()
        chars = len(result.output)
    except Exception:
        chars = len(gen.stream.output)
    await admission.finish(chars)
