// What the deployments table derives from a record: progress, endpoints, a cluster-size series.
import type { Deployment, DeploymentEvent, Plan } from "./types";

/** Return nodes done / nodes planned: a node is done when all its instances run. */
export function progress(d: Deployment, plan: Plan | undefined): { done: number; total: number } {
  const byNode = new Map<string, string[]>();
  for (const r of d.resources) byNode.set(r.node_name, [...(byNode.get(r.node_name) ?? []), r.state]);
  const done = [...byNode.values()].filter((states) => states.every((s) => s === "RUNNING")).length;
  const total = plan ? plan.nodes.length : byNode.size;
  return { done: Math.min(done, total || done), total: Math.max(total, done) };
}

/** Return the outputs that are endpoints: URLs, and host:port values. */
export function endpoints(outputs: Record<string, unknown>): { name: string; text: string; href: string }[] {
  const found = [];
  for (const [name, value] of Object.entries(outputs ?? {})) {
    if (typeof value !== "string") continue;
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) found.push({ name, text: value, href: value });
    else if (/^[\w.-]+:\d{1,5}$/.test(value)) found.push({ name, text: value, href: `http://${value}` });
  }
  return found;
}

/** Return (time, instances) points of each scalable node from resource and scaling events. */
export function clusterSize(events: DeploymentEvent[], node: string): { at: number; size: number }[] {
  const alive = new Set<string>();
  const points: { at: number; size: number }[] = [];
  for (const e of events) {
    const data = e.data ?? {};
    const eventNode = (data.node ?? data.node_name) as string | undefined;
    if (eventNode !== node) continue;
    if (typeof data.count === "number" && (e.kind.includes("scal") || e.kind === "update")) {
      points.push({ at: Date.parse(e.at), size: data.count });
      continue;
    }
    const key = `${eventNode}/${String(data.index ?? "")}`;
    if (e.kind === "resource" && data.state === "RUNNING") alive.add(key);
    else if (e.kind === "resource_removed" || data.state === "DELETED") alive.delete(key);
    else continue;
    points.push({ at: Date.parse(e.at), size: alive.size });
  }
  return points;
}
