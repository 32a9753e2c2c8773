import { describe, expect, it } from "vitest";
import { byteTicks, cachePlot, decisionText, elasticNodes, elasticPlot, formatBytes, linePath, scalingRounds, stepPath, ticks, timeLabel, timeTicks } from "./charts";
import type { CacheStats } from "./charts";
import type { DeploymentEvent } from "./types";

// a scale_decision event as airflow_cloud_paas/scaling/elastic.py records it
const round = (id: number, t: number, workers: string[], queued: number, added: number[], retired: number[],
  reasons: string[], node = "worker"): DeploymentEvent => ({
  id, at: new Date(t * 1000 + 500).toISOString(), kind: "scale_decision", message: `${node}: +${added.length} -${retired.length}`,
  data: {
    node, service: "spark", policy: "Clues", reasons, applied: { added, retired },
    decision: { add: added.length, retire: retired.map((i) => `${node}-${i}`) },
    snapshot: { time_s: t, queued_jobs: queued, queued_cpus: queued * 2, workers: Object.fromEntries(workers.map((w) => [w, "busy"])) },
  },
});

const events: DeploymentEvent[] = [
  { id: 1, at: "2026-01-01T00:00:00Z", kind: "scaled", message: "hosts -> 1", data: { node: "hosts", count: 1 } },
  round(2, 1000, ["worker-0"], 3, [1, 2], [], ["3 job(s) queued need 2 more worker(s)"]),
  round(3, 1060, ["worker-0", "worker-1", "worker-2"], 0, [], [], []),
  round(4, 1120, ["worker-0", "worker-1", "worker-2"], 0, [], [1, 2], ["worker-1 idle for 60 s", "worker-2 idle for 60 s"]),
  round(5, 1030, ["a-0"], 1, [], [], [], "other"),
];

describe("elastic scaling rounds", () => {
  it("reads what each round saw, decided and applied, for one node", () => {
    const rounds = scalingRounds(events, "worker");
    expect(rounds.map((r) => [r.at, r.before, r.after, r.queued])).toEqual([
      [1_000_000, 1, 3, 3], [1_060_000, 3, 3, 0], [1_120_000, 3, 1, 0]]);
    expect(rounds[0].queuedCpus).toBe(6);
    expect(rounds[2].reasons).toEqual(["worker-1 idle for 60 s", "worker-2 idle for 60 s"]);
    expect(elasticNodes(events)).toEqual(["other", "worker"]);
  });

  it("plots size as steps, the queue, and marks only the rounds that changed the size", () => {
    const plot = elasticPlot(scalingRounds(events, "worker"))!;
    expect(plot.size.map((p) => p.value)).toEqual([1, 3, 3, 3, 1]);
    expect(plot.queued.map((p) => p.value)).toEqual([3, 0, 0]);
    expect(plot.decisions.map(decisionText)).toEqual(["+2 (workers 1, 2)", "-2 (workers 1, 2)"]);
    expect([plot.t0, plot.t1, plot.max]).toEqual([1_000_000, 1_150_000, 3]);
    expect(elasticPlot([])).toBeNull();
  });

  it("draws steps and lines", () => {
    const pts = [{ at: 0, value: 1 }, { at: 10, value: 3 }];
    const x = (t: number) => t * 2, y = (v: number) => 100 - v;
    expect(stepPath(pts, x, y, 15)).toBe("M 0 99 H 20 V 97 H 30");
    expect(linePath(pts, x, y)).toBe("M 0 99 L 20 97");
    expect(stepPath([], x, y)).toBe("");
  });

  it("puts round ticks on the axes", () => {
    expect(ticks(5)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(ticks(12)).toEqual([0, 5, 10]);
    expect(ticks(1, 4)).toEqual([0, 0.5, 1]);
    expect(ticks(0)).toEqual([0]);
    expect(timeTicks(0, 100, 4)).toEqual([0, 25, 50, 75, 100]);
    const t = Date.UTC(2026, 0, 1, 12, 30, 7); // any time zone keeps the seconds, and minutes other than 07
    expect(timeLabel(t, 60_000)).toMatch(/07/);
    expect(timeLabel(t, 3_600_000)).not.toMatch(/07/);
  });
});

describe("XCache statistics", () => {
  const stats: CacheStats = {
    caches: [{ node: "xcache", index: 0, root_url: "root://127.0.0.1:1094", cache_dir: "/c" }], labels: ["dep"], bucket_s: 60,
    buckets: [
      { start_s: 120, end_s: 180, accesses: 2, bytes_hit: 300, bytes_missed: 100, bytes_bypassed: 0, bytes_prefetched: 50, bytes_written: 150, byte_hit_ratio: 0.75 },
      { start_s: 60, end_s: 120, accesses: 1, bytes_hit: 0, bytes_missed: 1000, bytes_bypassed: 0, bytes_prefetched: 0, bytes_written: 1000, byte_hit_ratio: 0 },
      { start_s: 180, end_s: 240, accesses: 0, bytes_hit: 0, bytes_missed: 0, bytes_bypassed: 0, bytes_prefetched: 200, bytes_written: 200, byte_hit_ratio: null },
    ],
  };

  it("orders buckets, keeps the ratio where something was read and sums the bytes", () => {
    const plot = cachePlot(stats)!;
    expect(plot.ratio).toEqual([{ at: 90_000, value: 0 }, { at: 150_000, value: 0.75 }]);
    expect(plot.written.map((w) => w.value)).toEqual([1000, 150, 200]);
    expect([plot.t0, plot.t1, plot.maxWritten]).toEqual([60_000, 240_000, 1000]);
    expect([plot.totalRead, plot.totalHit, plot.totalWritten]).toEqual([1400, 300, 1350]);
    expect(cachePlot({ ...stats, buckets: [] })).toBeNull();
    expect(cachePlot(null)).toBeNull();
  });

  it("ticks a byte axis in binary units", () => {
    expect(byteTicks(3.5 * 1024 ** 2).map(formatBytes)).toEqual(["0 B", "1 MiB", "2 MiB", "3 MiB"]);
    expect(byteTicks(800)).toEqual([0, 200, 400, 600, 800]);
  });

  it("writes bytes in binary units", () => {
    expect([formatBytes(0), formatBytes(512), formatBytes(1536), formatBytes(20 * 1024 ** 2), formatBytes(3 * 1024 ** 4)])
      .toEqual(["0 B", "512 B", "1.5 KiB", "20 MiB", "3 TiB"]);
  });
});
