// What the details page plots, shaped from the API's data (no React here: unit-tested with vitest).
import type { DeploymentEvent } from "./types";

/** The history event of one elastic scaling round (airflow_cloud_paas/scaling/elastic.py SCALE_EVENT). */
export const SCALE_EVENT = "scale_decision";

/** One elastic scaling round: what the probe saw, what the policy decided and what was applied. */
export interface ScalingRound {
  at: number; // ms since the epoch: when the round read the cluster
  before: number; // workers the round saw
  after: number; // workers once its change was applied
  queued: number; // jobs waiting
  queuedCpus: number;
  added: number[];
  retired: number[];
  reasons: string[];
  summary: string;
}

function numbers(value: unknown): number[] {
  return Array.isArray(value) ? value.filter((v): v is number => typeof v === "number") : [];
}

/** Return the elastic scaling rounds of one worker node, oldest first. */
export function scalingRounds(events: DeploymentEvent[], node: string): ScalingRound[] {
  const rounds: ScalingRound[] = [];
  for (const e of events) {
    const data = e.data ?? {};
    if (e.kind !== SCALE_EVENT || data.node !== node) continue;
    const snapshot = (data.snapshot ?? {}) as Record<string, unknown>;
    const applied = (data.applied ?? {}) as Record<string, unknown>;
    const workers = snapshot.workers;
    const before = workers && typeof workers === "object" ? Object.keys(workers).length : 0;
    const added = numbers(applied.added), retired = numbers(applied.retired);
    const time = typeof snapshot.time_s === "number" ? snapshot.time_s * 1000 : Date.parse(e.at);
    rounds.push({
      at: time, before, after: Math.max(0, before + added.length - retired.length),
      queued: typeof snapshot.queued_jobs === "number" ? snapshot.queued_jobs : 0,
      queuedCpus: typeof snapshot.queued_cpus === "number" ? snapshot.queued_cpus : 0,
      added, retired,
      reasons: Array.isArray(data.reasons) ? data.reasons.map(String) : [],
      summary: e.message,
    });
  }
  return rounds.sort((a, b) => a.at - b.at);
}

/** Return the worker nodes that elastic scaling rounds were recorded for. */
export function elasticNodes(events: DeploymentEvent[]): string[] {
  const nodes = new Set<string>();
  for (const e of events) if (e.kind === SCALE_EVENT && typeof e.data?.node === "string") nodes.add(e.data.node);
  return [...nodes].sort();
}

export interface Point { at: number; value: number }

export interface ElasticPlot {
  size: Point[]; // a step line: each round's observed size, then the size after its change
  queued: Point[];
  decisions: ScalingRound[]; // the rounds that added or retired workers
  t0: number;
  t1: number;
  max: number;
}

/** Return the cluster size and the queued demand over time, with the rounds that changed the size. */
export function elasticPlot(rounds: ScalingRound[]): ElasticPlot | null {
  if (rounds.length === 0) return null;
  const size: Point[] = [];
  for (const r of rounds) {
    size.push({ at: r.at, value: r.before });
    if (r.after !== r.before) size.push({ at: r.at, value: r.after });
  }
  const t0 = rounds[0].at;
  const last = rounds[rounds.length - 1].at;
  // a little room after the last round, so that its change shows
  const t1 = Math.max(last + Math.max(30_000, (last - t0) * 0.04), t0 + 1000);
  return {
    size,
    queued: rounds.map((r) => ({ at: r.at, value: r.queued })),
    decisions: rounds.filter((r) => r.added.length > 0 || r.retired.length > 0),
    t0, t1,
    max: Math.max(1, ...rounds.map((r) => Math.max(r.before, r.after, r.queued))),
  };
}

/** Return an SVG path drawing points as a step line (hold the value until the next point). */
export function stepPath(points: Point[], x: (t: number) => number, y: (v: number) => number, end?: number): string {
  if (points.length === 0) return "";
  let path = `M ${x(points[0].at)} ${y(points[0].value)}`;
  for (const p of points.slice(1)) path += ` H ${x(p.at)} V ${y(p.value)}`;
  if (end !== undefined) path += ` H ${x(end)}`;
  return path;
}

/** Return an SVG path joining points with straight lines. */
export function linePath(points: Point[], x: (t: number) => number, y: (v: number) => number): string {
  return points.map((p, i) => `${i === 0 ? "M" : "L"} ${x(p.at)} ${y(p.value)}`).join(" ");
}

/** Return what a scaling decision did, e.g. "+2 (workers 3, 4)" or "-1 (worker 0)". */
export function decisionText(r: ScalingRound): string {
  const part = (sign: string, indices: number[]) =>
    indices.length ? `${sign}${indices.length} (${indices.length > 1 ? "workers" : "worker"} ${indices.join(", ")})` : "";
  return [part("+", r.added), part("-", r.retired)].filter(Boolean).join(" ");
}

// ------------------------------------------------------------------------------------------ XCache
/** One time bucket of a cache's accesses, as the portal's cache-stats endpoint returns it. */
export interface CacheBucket {
  start_s: number;
  end_s: number;
  accesses: number;
  bytes_hit: number;
  bytes_missed: number;
  bytes_bypassed: number;
  bytes_prefetched: number;
  bytes_written: number;
  byte_hit_ratio: number | null;
}

export interface CacheStats {
  caches: { node: string; index: number; root_url: string | null; cache_dir: string }[];
  labels: string[];
  bucket_s: number;
  buckets: CacheBucket[];
}

export interface CachePlot {
  ratio: Point[]; // byte-hit ratio (0..1) at each bucket's middle; buckets where nothing was read are left out
  written: { start: number; end: number; value: number }[]; // bytes written per bucket
  t0: number;
  t1: number;
  maxWritten: number;
  totalRead: number;
  totalHit: number;
  totalWritten: number;
}

/** Return the byte-hit ratio and the bytes written over time of a cache's buckets. */
export function cachePlot(stats: CacheStats | null): CachePlot | null {
  const buckets = stats?.buckets ?? [];
  if (buckets.length === 0) return null;
  const sorted = [...buckets].sort((a, b) => a.start_s - b.start_s);
  let totalRead = 0, totalHit = 0, totalWritten = 0;
  for (const b of sorted) {
    totalRead += b.bytes_hit + b.bytes_missed + b.bytes_bypassed;
    totalHit += b.bytes_hit;
    totalWritten += b.bytes_written;
  }
  return {
    ratio: sorted.filter((b) => b.byte_hit_ratio !== null)
      .map((b) => ({ at: ((b.start_s + b.end_s) / 2) * 1000, value: b.byte_hit_ratio as number })),
    written: sorted.map((b) => ({ start: b.start_s * 1000, end: b.end_s * 1000, value: b.bytes_written })),
    t0: sorted[0].start_s * 1000,
    t1: sorted[sorted.length - 1].end_s * 1000,
    maxWritten: Math.max(1, ...sorted.map((b) => b.bytes_written)),
    totalRead, totalHit, totalWritten,
  };
}

/** Return a byte count in binary units: 0 B, 512 B, 1.5 KiB, 20 MiB. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = n, unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value >= 10 ? Math.round(value) : Math.round(value * 10) / 10} ${units[unit]}`;
}

/** Return up to about ``count`` round tick values from 0 to ``max`` (integers for counts of things). */
export function ticks(max: number, count = 5): number[] {
  if (max <= 0) return [0];
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
  const found: number[] = [];
  for (let v = 0; v <= max + 1e-9; v += step) found.push(Math.round(v * 1e6) / 1e6);
  return found;
}

/** Return ``count`` + 1 evenly spaced times from ``t0`` to ``t1``. */
export function timeTicks(t0: number, t1: number, count = 4): number[] {
  return Array.from({ length: count + 1 }, (_, i) => t0 + ((t1 - t0) * i) / count);
}

/** Return round tick values for a byte axis, in the binary unit of ``max`` (0, 1 MiB, 2 MiB...). */
export function byteTicks(max: number, count = 4): number[] {
  const unit = max >= 1024 ? 1024 ** Math.min(5, Math.floor(Math.log(max) / Math.log(1024))) : 1;
  return ticks(max / unit, count).map((v) => v * unit);
}

/** Return a time label: hours and minutes, with seconds when the axis spans less than 10 minutes. */
export function timeLabel(t: number, span: number): string {
  const options: Intl.DateTimeFormatOptions = { hour: "2-digit", minute: "2-digit" };
  if (span < 600_000) options.second = "2-digit";
  return new Date(t).toLocaleTimeString([], options);
}
