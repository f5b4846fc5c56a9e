"""Durable background jobs: retrain requests, the queue's worker, schedules, loss curves.

``spec`` checks a retrain request and builds the trainer's command line; ``control.Jobs`` is
what the service exposes (queue, inspect, cancel, schedules); ``worker`` claims jobs and runs
``runner``'s training child process under a lease; ``publish`` turns a finished run into a
model version; ``schedules`` fires cron schedules exactly once; ``plots`` draws loss curves.
The queue itself (claims, leases, events) is ``store``; schedule rows are ``schedule_store``.
"""

from genbot.jobs.control import Jobs
from genbot.jobs.schedules import Scheduler, next_fire_time
from genbot.jobs.spec import RetrainRequest
from genbot.jobs.worker import Worker

__all__ = ["Jobs", "RetrainRequest", "Scheduler", "Worker", "next_fire_time"]
