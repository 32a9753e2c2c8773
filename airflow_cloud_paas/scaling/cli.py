"""``cloud-paas scale-sim``: replay a job trace through a scaling policy and print what it cost.

``add_scale_sim_parser(subparsers)`` adds the sub-command to the ``cloud-paas`` parser;
``python -m airflow_cloud_paas.scaling.cli`` runs it alone. Bad input (an unreadable or malformed
trace, an unknown policy, impossible limits) prints one ``error:`` line and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from airflow_cloud_paas.scaling.errors import ScalingError
from airflow_cloud_paas.scaling.packing import PLACEMENTS, placement_from_name
from airflow_cloud_paas.scaling.policy import POLICIES, policy_from_name
from airflow_cloud_paas.scaling.sim import load_trace, simulate

HELP = "replay a job trace (CSV submit_s,runtime_s,cpus[,group,estimate_s]) through a scaling policy"


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", required=True, metavar="FILE",
                   help="CSV with header submit_s,runtime_s,cpus and optionally group,estimate_s (the campaign and the "
                        "requested wall time: shared/workloads/gen_job_trace.py [--with-estimates] writes them)")
    p.add_argument("--policy", default="smart", metavar="NAME", help=f"one of {', '.join(POLICIES)} (default: smart)")
    p.add_argument("--placement", default="fcfs", metavar="NAME",
                   help=f"which queued job starts on which worker, one of {', '.join(PLACEMENTS)} (default: fcfs, "
                        "first come first served onto the fullest worker; pack: longest expected runtime first, onto "
                        "the worker whose jobs end closest after it, from the estimates and the finished jobs)")
    p.add_argument("--tolerance-fraction", type=float, default=None, metavar="F",
                   help="smart only: queued cores left to the cores that running jobs free, as a fraction of the used "
                        "cores; the wait against node-hours knob: higher waits longer and boots fewer workers "
                        "(default: 0.2; 0.15 with --placement pack, where the benchmark meets its wait targets on "
                        "every seed)")
    p.add_argument("--node-cores", type=int, default=8, help="cores per worker (default: 8)")
    p.add_argument("--boot-s", type=float, default=180.0, help="seconds from request to first job (default: 180)")
    p.add_argument("--interval-s", type=float, default=60.0,
                   help="seconds between policy decisions, like a scheduled DAG (default: 60)")
    p.add_argument("--every-event", action="store_true",
                   help="also decide after every job arrival, job end and boot (idealised: no live loop can)")
    p.add_argument("--min-nodes", type=int, default=0)
    p.add_argument("--max-nodes", type=int, default=256)
    p.add_argument("--max-booting", type=int, default=64)
    p.add_argument("--idle-time-s", type=float, default=600.0, help="power a worker off after this idle time")
    p.add_argument("--spare-nodes", type=int, default=0, help="keep this many workers idle beyond the demand")
    p.add_argument("--initial-nodes", type=int, default=0, help="workers already up at the start (default: 0)")
    p.add_argument("--until-released", action="store_true",
                   help="after the last job, go on until idle workers are released down to --min-nodes")
    p.add_argument("--decisions", metavar="FILE",
                   help="also write every decision that changes the pool, with its reasons, as JSON lines")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_scale_sim_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``scale-sim`` sub-command to a ``cloud-paas`` parser and return its parser.

    :param subparsers: what ``ArgumentParser.add_subparsers()`` returned
    """
    p = subparsers.add_parser("scale-sim", help=HELP, description=HELP)
    _add_arguments(p)
    p.set_defaults(func=run_scale_sim)
    return p


#: smart's queued-core tolerance under ``--placement pack`` unless given: at 0.2 one benchmark seed waits 64 s on mean
PACK_TOLERANCE_FRACTION = 0.15


def _tolerance(args: argparse.Namespace) -> float | None:
    """Return the tolerance fraction asked, else pack's own default, else None (the policy's default)."""
    if args.tolerance_fraction is not None:
        return args.tolerance_fraction
    return PACK_TOLERANCE_FRACTION if args.placement == "pack" and args.policy == "smart" else None


def run_scale_sim(args: argparse.Namespace) -> int:
    """Run ``scale-sim`` with parsed arguments; print the figures and return the exit code.

    :param args: the options ``add_scale_sim_parser`` defines
    """
    try:
        started = time.perf_counter()
        policy = policy_from_name(args.policy, min_nodes=args.min_nodes, max_nodes=args.max_nodes,
                                  max_booting=args.max_booting, idle_time_s=args.idle_time_s,
                                  spare_nodes=args.spare_nodes, node_cores=args.node_cores,
                                  tolerance_fraction=_tolerance(args))
        placement = placement_from_name(args.placement)
        jobs = load_trace(args.trace)
        result = simulate(jobs, policy, boot_s=args.boot_s, interval_s=args.interval_s,
                          every_event=args.every_event, record=bool(args.decisions),
                          initial_nodes=args.initial_nodes, until_released=args.until_released, placement=placement)
        replay_s = time.perf_counter() - started
    except ScalingError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    if args.decisions:
        try:
            with open(args.decisions, "w") as fh:
                for entry in result.log:
                    fh.write(json.dumps(entry) + "\n")
        except OSError as err:
            print(f"error: cannot write the decisions to {args.decisions}: {err.strerror}", file=sys.stderr)
            return 2
    out = {**result.to_dict(), "replay_s": round(replay_s, 3), "simulate_s": round(result.replay_s, 3),
           "trace": str(args.trace), "node_cores": args.node_cores, "boot_s": args.boot_s,
           "interval_s": args.interval_s, "every_event": args.every_event,
           "estimates": sum(1 for job in jobs if job.estimate_s is not None),
           "tolerance_fraction": getattr(policy, "tolerance_fraction", None)}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    rows = [
        ("policy", out["policy"] + ("" if out["tolerance_fraction"] is None
                                    else f" (tolerance_fraction {out['tolerance_fraction']:g})")),
        ("placement", f"{out['placement']} ({out['estimates']} of {out['jobs']} jobs with an estimate)"),
        ("trace", f"{out['trace']} ({out['jobs']} jobs, {out['makespan_s'] / 86400:.1f} days)"),
        ("node_hours", f"{out['node_hours']:.1f}"),
        ("bound_node_hours", f"{out['bound_node_hours']:.1f}  (core-hours / {args.node_cores} cores)"),
        ("ratio", "n/a (no work)" if out["ratio"] is None else f"{out['ratio']:.3f}"),
        ("mean_wait", f"{out['mean_wait_s']:.1f} s"),
        ("p95_wait", f"{out['p95_wait_s']:.1f} s"),
        ("max_wait", f"{out['max_wait_s']:.1f} s"),
        ("boots / peak", f"{out['boots']} workers booted, at most {out['peak_nodes']} at once"),
        ("decisions", f"{out['decisions']} (every {args.interval_s:g} s"
                      f"{' and after every event' if args.every_event else ''})"),
        ("replay", f"{out['replay_s']:.2f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scale-sim`` alone (``python -m airflow_cloud_paas.scaling.cli``).

    :param argv: the arguments (default: ``sys.argv[1:]``)
    """
    parser = argparse.ArgumentParser(prog="cloud-paas scale-sim", description=HELP)
    _add_arguments(parser)
    return run_scale_sim(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
