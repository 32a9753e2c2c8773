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
    from airflow_cloud_paas.services.xcache.sim import parse_capacity, replay
    from airflow_cloud_paas.services.xcache.trace import load_trace

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


# ------------------------------------------------------------------------------------------ xcache-monitor
ACCESS_LOG_ENV = "AIRFLOW_CLOUD_PAAS_ACCESS_LOG"


def add_xcache_monitor_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``xcache-monitor`` command (a long-running listener) and return its parser.

    :param subparsers: what ``ArgumentParser.add_subparsers()`` returned
    """
    p = subparsers.add_parser(
        "xcache-monitor", help="receive an XCache's pfc monitoring stream into the access log (runs until stopped)",
        description="Listen for an XCache's g-stream (xrootd.monitor ... dest pfc HOST:PORT) and store every "
                    "file-close record in the access log, until SIGTERM or SIGINT. Records are stored under "
                    "idempotent keys, so the .cinfo ingestion of the same accesses adds nothing twice.")
    p.add_argument("--listen", default="127.0.0.1:9930", help="UDP host:port to bind (default 127.0.0.1:9930; "
                   "port 0 picks a free one, printed on the first line)")
    p.add_argument("--access-log", default=None,
                   help=f"SQLAlchemy URL or SQLite file of the access log (default: ${ACCESS_LOG_ENV})")
    p.add_argument("--cache", required=True, help="the cache's label in the access log (its xrootd connection id)")
    p.add_argument("--report-s", type=float, default=300.0, help="seconds between progress lines (default 300)")
    p.set_defaults(func=run_xcache_monitor)
    return p


def run_xcache_monitor(args: argparse.Namespace) -> int:
    """Run ``xcache-monitor`` until SIGTERM/SIGINT: 0 when stopped, 2 (message on stderr) for bad arguments.

    :param args: parsed arguments with ``listen``, ``access_log``, ``cache`` and ``report_s``
    """
    import os
    import signal
    import threading

    from airflow_cloud_paas.services.xcache.config import XRootDConfigError
    from airflow_cloud_paas.services.xcache.monitor import AccessLog, PfcMonitor

    url = args.access_log or os.environ.get(ACCESS_LOG_ENV)
    try:
        if not url:
            raise XRootDConfigError(f"no access log: give --access-log or set ${ACCESS_LOG_ENV}", field="access_log")
        if args.report_s <= 0:
            raise XRootDConfigError(f"--report-s must be more than 0, got {args.report_s}", field="report_s")
        host, _, port_text = str(args.listen).rpartition(":")
        if not host or not port_text.isdigit() or int(port_text) > 65535:
            raise XRootDConfigError(f"--listen must be host:port (port 0: a free one), got {args.listen!r}",
                                    field="listen")
        port = int(port_text)
        log = AccessLog(url)
    except XCacheError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    stored = {"records": 0}

    def store(records: list) -> None:
        stored["records"] += log.append(records)

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    monitor = PfcMonitor(port, host=host, cache=args.cache, on_record=store, keep=False)
    try:
        monitor.start()
        print(f"listening on {monitor.address} for cache {args.cache}, storing into "
              f"{log.url.render_as_string(hide_password=True)}", flush=True)
        while not stop.wait(args.report_s):
            print(f"{monitor.packets} packet(s), {stored['records']} new record(s), {monitor.callback_errors} "
                  "failed store(s)", flush=True)
    except XCacheError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    finally:
        monitor.stop()
        log.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"stopped: {monitor.packets} packet(s), {stored['records']} new record(s), {monitor.callback_errors} "
          "failed store(s)", flush=True)
    return 0
