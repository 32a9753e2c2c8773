"""``cloud-paas cache-sim``: replay an access trace through a cache policy and print hits and writes.

Wired into the ``cloud-paas`` parser by :func:`add_cache_sim_parser`; nothing here imports Airflow.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from airflow_cloud_paas.services.xcache.errors import XCacheError

DESCRIPTION = ("replay an access trace (CSV time_s,path,size_bytes) through a cache policy and print "
               "hit_ratio, byte_hit_ratio and bytes_written")


def add_cache_sim_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``cache-sim`` command to ``cloud-paas``'s subparsers and return its parser.

    :param subparsers: what ``ArgumentParser.add_subparsers()`` returned
    """
    from airflow_cloud_paas.services.xcache.policies import POLICIES

    p = subparsers.add_parser("cache-sim", help="replay an access trace through a cache policy",
                              description=DESCRIPTION)
    p.add_argument("--trace", required=True, help="the trace CSV (gen_access_trace.py writes them)")
    p.add_argument("--capacity", required=True,
                   help="cache size: 25TB, 500GB, 10TiB... (binary units: 1 TB = 1024**4 bytes)")
    p.add_argument("--policy", default="smart", help=f"one of {', '.join(POLICIES)} (default: smart)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run_cache_sim)
    return p


def run_cache_sim(args: argparse.Namespace) -> int:
    """Run ``cache-sim``: 0 on success, 2 (with a message on stderr) for a bad trace, policy or capacity.

    :param args: parsed arguments with ``trace``, ``capacity``, ``policy`` and ``json``
    """
    from airflow_cloud_paas.services.xcache.policies import make_policy
    from airflow_cloud_paas.services.xcache.sim import load_trace, parse_capacity, replay

    try:
        capacity = parse_capacity(args.capacity)
        policy = make_policy(args.policy, capacity)  # checked before the (long) trace load
        start = time.perf_counter()
        trace = load_trace(args.trace)
        load_s = time.perf_counter() - start
        result = replay(trace, policy)
    except XCacheError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    if args.json:
        out = {"policy": result.policy, "trace": str(args.trace), "capacity_bytes": result.capacity_bytes,
               "requests": result.requests, "hit_ratio": result.hit_ratio, "byte_hit_ratio": result.byte_hit_ratio,
               "bytes_written": result.bytes_written, "bytes_written_tb": result.bytes_written_tb,
               "bytes_requested": result.bytes_requested, "bytes_hit": result.bytes_hit,
               "replay_s": round(result.replay_s, 3), "load_s": round(load_s, 3)}
        print(json.dumps(out))
    else:
        print(f"{result.policy} on {args.trace} with {result.capacity_bytes / 1024**4:g} TB: "
              f"{result.requests} requests, hit_ratio {result.hit_ratio:.4f}, byte_hit_ratio "
              f"{result.byte_hit_ratio:.4f}, bytes_written {result.bytes_written} ({result.bytes_written_tb:.1f} TB), "
              f"replayed in {result.replay_s:.1f} s")
    return 0
