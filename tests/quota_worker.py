"""A separate process for the cross-process quota tests: run admissions against a shared database.

``python -m tests.quota_worker URL MODE COUNT GO_FILE``: registers itself as a serving process,
waits until GO_FILE exists (so two workers start together), runs COUNT admissions at once on the
subject ("key", "shared") and prints one JSON line: what was granted. MODE "chars" reserves 30
characters each under a 200-character daily quota and charges all of them; MODE "concurrent"
takes slots under a limit of 3 and keeps them (the test's other worker must see them); MODE
"cooldown" asks under a one-hour cooldown.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from genbot.errors import QuotaExceeded
from genbot.quotas.policy import Admission, Limits, QuotaPolicy, Subject
from genbot.storage.db import Database
from genbot.storage.processes import heartbeat, new_process_id

DAILY = 200
CONCURRENT = 3


async def _one(policy: QuotaPolicy, subject: Subject, mode: str) -> int:
    """One admission: the characters granted (chars) or 1 per admission (other modes); 0 if refused."""
    try:
        admission: Admission = await policy.admit([subject], chars=30)
    except QuotaExceeded:
        return 0
    if mode == "chars":
        granted = admission.remaining_chars or 0
        await admission.finish(granted)  # used every character it was given
        return granted
    return 1


async def main(url: str, mode: str, count: int, go_file: Path) -> None:
    """Register, wait for the start signal, run ``count`` admissions at once, print the grants."""
    limits = {
        "chars": Limits(chars_per_day=DAILY),
        "concurrent": Limits(concurrent=CONCURRENT),
        "cooldown": Limits(cooldown_s=3600.0),
    }[mode]
    subject = Subject("key", "shared", limits)
    async with Database.open(url) as db:
        owner = new_process_id()
        await heartbeat(db, owner, datetime.now(UTC))
        policy = QuotaPolicy(db, owner)
        print("ready", flush=True)
        while not go_file.exists():
            time.sleep(0.01)  # nothing else runs in this process yet
        grants = await asyncio.gather(*(_one(policy, subject, mode) for _ in range(count)))
        print(json.dumps(grants), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])))
