"""`async-gateway jobs list|show|retry|purge`: the operator's view of the store.

Works on the store the gateway uses, while it serves: each command is a few short transactions
through the same compare-and-set verbs, never a long lock.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from gateway import jobs, units
from gateway.config import Config
from gateway.jobs import Job
from gateway.store import Store, open_store

LIST_LIMIT = 1000


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("jobs", help="list, show, retry or purge stored jobs")
    verbs = parser.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="stored jobs, newest first")
    listing.add_argument("--status", choices=[str(s) for s in jobs.Status if s != "receiving"])
    listing.add_argument("--route", help="only jobs of the route with this path")
    listing.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    listing.add_argument("--limit", type=int, default=LIST_LIMIT)
    for verb, text in (("show", "one job's metadata"), ("retry", "queue a failed job again")):
        verbs.add_parser(verb, help=text).add_argument("id")
    purge = verbs.add_parser("purge", help="delete finished jobs older than a duration")
    purge.add_argument("--older-than", required=True, type=_duration, metavar="DURATION")
    for sub in verbs.choices.values():
        sub.add_argument("--config", default=None, help="YAML file (as for serve)")


def _duration(text: str) -> float:
    try:
        return units.duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


async def run(config: Config, args: argparse.Namespace) -> int:
    store = await open_store(config.storage)
    try:
        if args.verb == "list":
            found = await store.list_jobs(args.status, args.route, args.limit)
            print(
                json.dumps([jobs.summary(j) for j in found], indent=2)
                if args.json
                else table(found)
            )
            return 0
        if args.verb == "purge":
            count = await store.purge_finished(time.time() - args.older_than)
            print(f"purged {count} finished jobs")
            return 0
        return await _one(store, args)
    finally:
        await store.close()


async def _one(store: Store, args: argparse.Namespace) -> int:
    job = await store.get(args.id, time.time())
    if job is None:
        print(f"no job {args.id}", file=sys.stderr)
        return 1
    if args.verb == "show":
        print(json.dumps(jobs.summary(job), indent=2))
        return 0
    if not await store.retry(job.id):
        print(f"job {job.id} is {job.status}, not failed: nothing to retry", file=sys.stderr)
        return 1
    print(f"queued {job.id} again")
    return 0


def table(found: list[Job]) -> str:
    rows = [("ID", "STATUS", "TRIES", "CREATED", "METHOD", "PATH")]
    rows += [
        (j.id, str(j.status), str(j.attempts), jobs.rfc3339(j.created_at) or "", j.method, j.target)
        for j in found
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
        for r in rows
    )
