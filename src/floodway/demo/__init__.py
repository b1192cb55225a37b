"""Runnable demos.

``floodway demo`` (and ``make demo``) runs ``floodway.demo.blackfriday``: 5,000 orders synced
from one loopback API to another, rate-limited one, in short resumable runs, by a worker in a
subprocess (``--crash`` kills it halfway). Its two APIs are in ``floodway.demo.servers``.
``floodway demo --basic`` runs ``floodway.demo.basic``: a few kinds of jobs and one worker.
"""
