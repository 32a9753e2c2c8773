import { describe, expect, it } from "vitest";
import { clusterSize, endpoints, progress } from "./progress";
import type { Deployment, DeploymentEvent } from "./types";

const event = (id: number, at: string, kind: string, data: Record<string, unknown>): DeploymentEvent =>
  ({ id, at, kind, message: "", data });

describe("deployments table", () => {
  it("counts nodes whose instances all run against the plan", () => {
    const d = { resources: [
      { node_name: "master", index: 0, state: "RUNNING" },
      { node_name: "worker", index: 0, state: "RUNNING" },
      { node_name: "worker", index: 1, state: "CREATING" },
    ] } as unknown as Deployment;
    expect(progress(d, { nodes: ["master", "worker", "app"], scalable: [] })).toEqual({ done: 1, total: 3 });
  });
  it("shows URLs and host:port outputs as links", () => {
    expect(endpoints({ endpoint: "127.0.0.1:32768", ui: "http://h:8080/", n: 3, name: "x" })).toEqual([
      { name: "endpoint", text: "127.0.0.1:32768", href: "http://127.0.0.1:32768" },
      { name: "ui", text: "http://h:8080/", href: "http://h:8080/" },
    ]);
  });
});

describe("cluster size over time", () => {
  it("follows resources and scaling events of one node", () => {
    const events = [
      event(1, "2026-01-01T00:00:00Z", "resource", { node: "w", index: 0, state: "RUNNING" }),
      event(2, "2026-01-01T00:01:00Z", "resource", { node: "w", index: 1, state: "RUNNING" }),
      event(3, "2026-01-01T00:01:30Z", "resource", { node: "m", index: 0, state: "RUNNING" }),
      event(4, "2026-01-01T00:02:00Z", "scaled", { node: "w", count: 3 }),
      event(5, "2026-01-01T00:03:00Z", "resource_removed", { node: "w", index: 1 }),
    ];
    expect(clusterSize(events, "w").map((p) => p.size)).toEqual([1, 2, 3, 1]);
  });
});
