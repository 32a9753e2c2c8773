// The Cloud PaaS portal inside the Airflow UI: catalogue, the user's deployments, deployment details.
// Chakra UI, React and the colour mode are the Airflow UI's own (externals of this bundle), so the
// views follow its theme, light and dark.
import { Badge, Box, Button, Flex, Heading, Input, Link, NativeSelect, SimpleGrid, Spinner, Table, Text } from "@chakra-ui/react";
import { useCallback, useEffect, useMemo, useState } from "react";

import { api, runLink, taskLink, triggerDag } from "./api";
import { buildConf, fieldError, InputField, initialText, widgetFor } from "./forms";
import {
  byteTicks, cachePlot, decisionText, elasticNodes, elasticPlot, formatBytes, linePath, scalingRounds, stepPath, ticks, timeLabel, timeTicks,
} from "./charts";
import type { CacheStats } from "./charts";
import { clusterSize, endpoints, progress } from "./progress";
import type { Application, Deployment, Plan } from "./types";

type View =
  | { page: "catalogue" }
  | { page: "form"; app: Application }
  | { page: "deployments" }
  | { page: "details"; id: string };

const ICONS: Record<string, [string, string]> = {
  docker: ["Dk", "blue"], spark: ["Sp", "orange"], htcondor: ["HT", "teal"], xrootd: ["XR", "purple"],
};
const REFRESH_MS = 5000;

function statusPalette(status: string): string {
  if (status.endsWith("_FAILED") || status === "failed") return "red";
  if (status.endsWith("_IN_PROGRESS") || status === "running" || status === "queued") return "blue";
  if (status === "DELETE_COMPLETE") return "gray";
  return "green";
}

function when(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleString() : "";
}

function ErrorText({ error }: { error: string }) {
  return error ? <Text color="fg.error" data-testid="error">{error}</Text> : null;
}

export default function App() {
  const initial: View = window.location.pathname.includes("deployments") ? { page: "deployments" } : { page: "catalogue" };
  const [view, setView] = useState<View>(initial);
  const tab = (page: "catalogue" | "deployments", label: string) => (
    <Button size="sm" variant={view.page === page ? "solid" : "ghost"} onClick={() => setView({ page })}>{label}</Button>
  );
  return (
    <Box p={4} data-testid="cloud-paas-portal">
      <Flex gap={2} mb={4} align="center">
        <Heading size="lg" mr={4}>Cloud PaaS</Heading>
        {tab("catalogue", "Catalogue")}
        {tab("deployments", "My deployments")}
      </Flex>
      {view.page === "catalogue" && <Catalogue open={(app) => setView({ page: "form", app })} />}
      {view.page === "form" && (
        <DeployForm app={view.app} back={() => setView({ page: "catalogue" })} done={() => setView({ page: "deployments" })} />
      )}
      {view.page === "deployments" && <Deployments open={(id) => setView({ page: "details", id })} />}
      {view.page === "details" && <Details id={view.id} back={() => setView({ page: "deployments" })} />}
    </Box>
  );
}

function Catalogue({ open }: { open: (app: Application) => void }) {
  const [apps, setApps] = useState<Application[] | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    api<Application[]>("cloud-paas-portal/api/catalogue").then(setApps, (e: Error) => setError(e.message));
  }, []);
  if (error) return <ErrorText error={error} />;
  if (!apps) return <Spinner />;
  return (
    <SimpleGrid columns={{ base: 1, md: 2, xl: 3 }} gap={4}>
      {apps.map((app) => (
        <Box key={app.name} data-testid={`app-${app.name}`} borderWidth="1px" borderColor="border" borderRadius="md"
          bg="bg.panel" p={4} display="flex" flexDirection="column" gap={2}>
          <Flex align="center" gap={3}>
            <Flex aria-hidden w={10} h={10} borderRadius="full" align="center" justify="center" fontWeight="bold"
              bg={`${(ICONS[app.icon] ?? ["", "gray"])[1]}.solid`} color={`${(ICONS[app.icon] ?? ["", "gray"])[1]}.contrast`}>
              {(ICONS[app.icon] ?? [app.display_name.slice(0, 2)])[0]}
            </Flex>
            <Box>
              <Heading size="md">{app.display_name}</Heading>
              <Badge colorPalette="purple">{app.category}</Badge>
            </Box>
          </Flex>
          <Text fontSize="sm" color="fg.muted" flex="1">{app.description}</Text>
          <Flex justify="space-between" align="center">
            <Text fontSize="xs" color="fg.muted">{app.dags.map((d) => d.dag_id).join(", ") || "no DAG deploys it"}</Text>
            <Button size="sm" colorPalette="blue" disabled={app.dags.length === 0} onClick={() => open(app)}>Deploy</Button>
          </Flex>
        </Box>
      ))}
    </SimpleGrid>
  );
}

/** The fields of an application's form: its portlet's, or the job identifier and every input. */
function formFields(app: Application): InputField[] {
  const jobId: InputField = {
    name: "deployment_id", type: "string", label: "Job identifier", has_default: false, default: null,
    required: app.portlet !== null, secret: false,
    description: "the deployment id (letters, digits, '-' and '_'); empty: derived from the run",
    constraints: [{ op: "pattern", limit: "[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", message: "must be letters, digits, '.', '-' or '_' (up to 63)" }],
  };
  if (app.portlet === null) return [{ ...jobId }, ...app.inputs];
  const byName = new Map(app.inputs.map((f) => [f.name, f]));
  return app.portlet.map(({ name, label }) => ({ ...(name === "deployment_id" ? jobId : byName.get(name)!), label }));
}

function DeployForm({ app, back, done }: { app: Application; back: () => void; done: () => void }) {
  const fields = useMemo(() => formFields(app), [app]);
  const [texts, setTexts] = useState<Record<string, string | boolean>>(() =>
    Object.fromEntries(fields.map((f) => [f.name, widgetFor(f) === "checkbox" ? Boolean(f.default) : initialText(f)])));
  const [dagId, setDagId] = useState(app.dags[0]?.dag_id ?? "");
  const [touched, setTouched] = useState(false);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const errors = Object.fromEntries(fields.map((f) => [f.name, fieldError(f, texts[f.name])]));
  const invalid = Object.values(errors).some(Boolean);

  const submit = async () => {
    setTouched(true);
    if (invalid) return;
    setBusy(true);
    setError("");
    try {
      await triggerDag(dagId, buildConf(fields, texts));
      done();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Box maxW="2xl" borderWidth="1px" borderColor="border" borderRadius="md" bg="bg.panel" p={5} data-testid="deploy-form">
      <Heading size="md" mb={1}>{app.display_name}</Heading>
      <Text fontSize="sm" color="fg.muted" mb={4}>{app.description}</Text>
      {app.dags.length > 1 && (
        <FieldBox label="Backend" help="the DAG that deploys it">
          <NativeSelect.Root size="sm">
            <NativeSelect.Field name="dag" value={dagId} onChange={(e) => setDagId(e.currentTarget.value)}>
              {app.dags.map((d) => <option key={d.dag_id} value={d.dag_id}>{d.backend ?? "default"} ({d.dag_id})</option>)}
            </NativeSelect.Field>
          </NativeSelect.Root>
        </FieldBox>
      )}
      {fields.map((f) => (
        <FieldBox key={f.name} label={f.label ?? f.name} help={f.description} required={f.required}
          error={touched || texts[f.name] !== initialText(f) ? errors[f.name] : ""}>
          <FieldInput field={f} value={texts[f.name]} onChange={(v) => setTexts({ ...texts, [f.name]: v })} />
        </FieldBox>
      ))}
      <ErrorText error={error} />
      <Flex gap={2} mt={4}>
        <Button colorPalette="blue" onClick={submit} loading={busy} disabled={touched && invalid}>Submit</Button>
        <Button variant="outline" onClick={back}>Back</Button>
      </Flex>
    </Box>
  );
}

function FieldBox({ label, help, required, error, children }: {
  label: string; help?: string; required?: boolean; error?: string; children: React.ReactNode;
}) {
  return (
    <Box mb={3}>
      <Text as="label" fontWeight="semibold" fontSize="sm">{label}{required ? " *" : ""}</Text>
      {children}
      {error ? <Text fontSize="xs" color="fg.error" data-testid="field-error">{label} {error}</Text>
        : help ? <Text fontSize="xs" color="fg.muted">{help}</Text> : null}
    </Box>
  );
}

function FieldInput({ field, value, onChange }: { field: InputField; value: string | boolean; onChange: (v: string | boolean) => void }) {
  const widget = widgetFor(field);
  if (widget === "checkbox") {
    return <Box><input type="checkbox" name={field.name} checked={Boolean(value)} onChange={(e) => onChange(e.currentTarget.checked)} /></Box>;
  }
  if (widget === "select") {
    const values = (field.constraints.find((c) => c.op === "valid_values")?.limit as unknown[]) ?? [];
    return (
      <NativeSelect.Root size="sm">
        <NativeSelect.Field name={field.name} value={String(value)} onChange={(e) => onChange(e.currentTarget.value)}>
          {!field.has_default && <option value="">choose…</option>}
          {values.map((v) => <option key={String(v)} value={String(v)}>{String(v)}</option>)}
        </NativeSelect.Field>
      </NativeSelect.Root>
    );
  }
  return (
    <Input size="sm" name={field.name} value={String(value)} autoComplete={widget === "password" ? "new-password" : "off"}
      type={widget === "password" ? "password" : "text"} inputMode={widget === "integer" || widget === "number" ? "decimal" : undefined}
      placeholder={widget === "json" ? "JSON" : field.type} onChange={(e) => onChange(e.currentTarget.value)} />
  );
}

function usePolling<T>(load: () => Promise<T>, deps: unknown[]): { data: T | null; error: string; reload: () => void } {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState("");
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const reload = useCallback(() => { load().then((d) => { setData(d); setError(""); }, (e: Error) => setError(e.message)); }, deps);
  useEffect(() => {
    reload();
    const timer = window.setInterval(reload, REFRESH_MS);
    return () => window.clearInterval(timer);
  }, [reload]);
  return { data, error, reload };
}

interface FailedRun { dag_id: string; dag_run_id: string; start_date: string | null; end_date: string | null; note?: string | null; conf?: Record<string, unknown> }

/** Failed deployment runs that never made a record (a refused input, a crash before the store). */
async function failedRuns(dagIds: string[], known: Set<string>): Promise<FailedRun[]> {
  if (dagIds.length === 0) return [];
  const runs = await api<{ dag_runs: FailedRun[] }>("api/v2/dags/~/dagRuns/list", {
    method: "POST", body: JSON.stringify({ dag_ids: dagIds, states: ["failed"], order_by: "-start_date", page_limit: 20 }),
  });
  return runs.dag_runs.filter((r) => !known.has(`${r.dag_id}/${r.dag_run_id}`));
}

function Deployments({ open }: { open: (id: string) => void }) {
  const [plans, setPlans] = useState<Record<string, Plan>>({});
  const [dagIds, setDagIds] = useState<string[]>([]);
  const [message, setMessage] = useState("");
  useEffect(() => {
    api<Application[]>("cloud-paas-portal/api/catalogue").then(
      (apps) => setDagIds([...new Set(apps.flatMap((a) => a.dags.map((d) => d.dag_id)))]), () => undefined);
  }, []);
  const { data, error, reload } = usePolling(async () => {
    const list = await api<Deployment[]>("cloud-paas/api/deployments");
    list.sort((a, b) => b.created_at.localeCompare(a.created_at));
    const known = new Set(list.map((d) => `${d.dag_id}/${d.run_id}`));
    const failed = await failedRuns(dagIds, known).catch(() => []);
    return { list, failed };
  }, [dagIds]);

  useEffect(() => {
    for (const d of data?.list ?? []) {
      if (plans[d.id] || d.status === "DELETE_COMPLETE") continue;
      api<Plan>(`cloud-paas-portal/api/deployments/${encodeURIComponent(d.id)}/plan`).then(
        (p) => setPlans((old) => ({ ...old, [d.id]: p })), () => undefined);
    }
  }, [data, plans]);

  const act = async (what: string, dagId: string, conf: Record<string, unknown>) => {
    try {
      await triggerDag(dagId, conf);
      setMessage(`${what}: triggered ${dagId}`);
      reload();
    } catch (err) {
      setMessage(`${what} failed: ${(err as Error).message}`);
    }
  };
  const remove = (d: Deployment) => {
    if (window.confirm(`Delete deployment ${d.id} and everything it made?`)) {
      void act(`delete ${d.id}`, "cloud_paas_delete_deployment", { deployment_id: d.id });
    }
  };
  const scale = (d: Deployment, node: string) => {
    const count = window.prompt(`Instances of ${node} in ${d.id}:`, "1");
    if (count !== null && /^\d+$/.test(count.trim())) {
      void act(`scale ${d.id}`, "cloud_paas_scale_deployment", { deployment_id: d.id, node, count: Number(count) });
    }
  };

  if (!data) return error ? <ErrorText error={error} /> : <Spinner />;
  return (
    <Box>
      <Flex justify="space-between" mb={2}>
        <Text fontSize="sm" color="fg.muted">Refreshed every {REFRESH_MS / 1000} s</Text>
        <Text fontSize="sm" data-testid="action-message">{message}</Text>
      </Flex>
      <ErrorText error={error} />
      <Table.Root size="sm" variant="outline" striped data-testid="deployments">
        <Table.Header>
          <Table.Row>
            {["Submitted", "Modified", "Status", "Description", "Output", "Backend", "Run", "Actions"].map((h) => (
              <Table.ColumnHeader key={h}>{h}</Table.ColumnHeader>
            ))}
          </Table.Row>
        </Table.Header>
        <Table.Body>
          {data.list.map((d) => {
            const p = progress(d, plans[d.id]);
            return (
              <Table.Row key={d.id} data-testid={`deployment-${d.id}`}>
                <Table.Cell>{when(d.created_at)}</Table.Cell>
                <Table.Cell>{when(d.updated_at)}</Table.Cell>
                <Table.Cell>
                  <Badge colorPalette={statusPalette(d.status)} data-testid="status">{d.status}</Badge>
                  <Text fontSize="xs" data-testid="progress">{p.done}/{p.total} nodes</Text>
                  {d.status.endsWith("_FAILED") && d.status_reason && <Text fontSize="xs" color="fg.error" data-testid="reason">{d.status_reason}</Text>}
                  {(plans[d.id]?.scalable ?? []).map((s) => (
                    <Text key={s.name} fontSize="xs" color="fg.muted" data-testid={`count-${s.name}`}>
                      {s.name}: {d.resources.filter((r) => r.node_name === s.name && r.state !== "DELETED").length} instance(s)
                    </Text>
                  ))}
                </Table.Cell>
                <Table.Cell><Text fontWeight="semibold">{d.id}</Text><Text fontSize="xs" color="fg.muted">{d.dag_id}</Text></Table.Cell>
                <Table.Cell data-testid="outputs">
                  {endpoints(d.outputs).map((e) => (
                    <Box key={e.name}><Link href={e.href} target="_blank" rel="noreferrer" color="fg.info">{e.text}</Link></Box>
                  ))}
                </Table.Cell>
                <Table.Cell>{d.backend}</Table.Cell>
                <Table.Cell>{d.dag_id && d.run_id && <Link href={runLink(d.dag_id, d.run_id)} color="fg.info">run / logs</Link>}</Table.Cell>
                <Table.Cell>
                  <Flex gap={1} wrap="wrap">
                    <Button size="xs" variant="outline" onClick={() => open(d.id)}>Details</Button>
                    {(plans[d.id]?.scalable ?? []).map((s) => (
                      <Button key={s.name} size="xs" variant="outline" onClick={() => scale(d, s.name)}>Scale {s.name}</Button>
                    ))}
                    <Button size="xs" colorPalette="red" variant="outline" disabled={d.status === "DELETE_COMPLETE"}
                      onClick={() => remove(d)}>Delete</Button>
                  </Flex>
                </Table.Cell>
              </Table.Row>
            );
          })}
          {data.failed.map((r) => (
            <Table.Row key={`${r.dag_id}/${r.dag_run_id}`} data-testid="failed-run">
              <Table.Cell>{when(r.start_date)}</Table.Cell>
              <Table.Cell>{when(r.end_date)}</Table.Cell>
              <Table.Cell><Badge colorPalette="red">failed</Badge><Text fontSize="xs">no deployment was made</Text></Table.Cell>
              <Table.Cell><Text>{String(r.conf?.deployment_id ?? r.dag_run_id)}</Text><Text fontSize="xs" color="fg.muted">{r.dag_id}</Text></Table.Cell>
              <Table.Cell colSpan={2}><FailedCause run={r} /></Table.Cell>
              <Table.Cell><Link href={runLink(r.dag_id, r.dag_run_id)} color="fg.info">run / logs</Link></Table.Cell>
              <Table.Cell />
            </Table.Row>
          ))}
        </Table.Body>
      </Table.Root>
      {data.list.length === 0 && data.failed.length === 0 && <Text mt={3} color="fg.muted">No deployments yet: start one from the catalogue.</Text>}
    </Box>
  );
}

interface TaskInstance { task_id: string; state: string | null; map_index: number }

function FailedCause({ run }: { run: FailedRun }) {
  const [tasks, setTasks] = useState<TaskInstance[]>([]);
  useEffect(() => {
    api<{ task_instances: TaskInstance[] }>(`api/v2/dags/${encodeURIComponent(run.dag_id)}/dagRuns/${encodeURIComponent(run.dag_run_id)}/taskInstances`)
      .then((r) => setTasks(r.task_instances.filter((t) => t.state === "failed" || t.state === "upstream_failed")), () => undefined);
  }, [run.dag_id, run.dag_run_id]);
  return (
    <Box fontSize="xs">
      {tasks.filter((t) => t.state === "failed").map((t) => (
        <Box key={t.task_id}>task <Link href={taskLink(run.dag_id, run.dag_run_id, t.task_id)} color="fg.info">{t.task_id}</Link> failed (see its log)</Box>
      ))}
    </Box>
  );
}

function Details({ id, back }: { id: string; back: () => void }) {
  const [tab, setTab] = useState<"resources" | "events" | "template">("resources");
  const [plan, setPlan] = useState<Plan | null>(null);
  const { data: d, error } = usePolling(() => api<Deployment>(`cloud-paas/api/deployments/${encodeURIComponent(id)}`), [id]);
  const [tasks, setTasks] = useState<TaskInstance[]>([]);
  useEffect(() => {
    api<Plan>(`cloud-paas-portal/api/deployments/${encodeURIComponent(id)}/plan`).then(setPlan, () => undefined);
  }, [id]);
  useEffect(() => {
    if (!d?.dag_id || !d.run_id) return;
    api<{ task_instances: TaskInstance[] }>(`api/v2/dags/${encodeURIComponent(d.dag_id)}/dagRuns/${encodeURIComponent(d.run_id)}/taskInstances`)
      .then((r) => setTasks(r.task_instances), () => undefined);
  }, [d?.dag_id, d?.run_id, d?.status]);
  if (!d) return error ? <ErrorText error={error} /> : <Spinner />;
  const p = progress(d, plan ?? undefined);
  const elastic = elasticNodes(d.events);
  const hasCache = d.resources.some((r) => r.attributes?.cache_dir && r.attributes?.origin);
  return (
    <Box data-testid="details">
      <Button size="sm" variant="ghost" onClick={back} mb={2}>← My deployments</Button>
      <Flex gap={3} align="center" mb={2}>
        <Heading size="md">{d.id}</Heading>
        <Badge colorPalette={statusPalette(d.status)} data-testid="status">{d.status}</Badge>
        <Text fontSize="sm">{p.done}/{p.total} nodes · {d.backend} · {d.owner ?? ""}</Text>
      </Flex>
      {d.status_reason && <Text fontSize="sm" color={d.status.endsWith("_FAILED") ? "fg.error" : "fg.muted"} mb={2}>{d.status_reason}</Text>}
      <Flex gap={4} mb={3} wrap="wrap">
        {endpoints(d.outputs).map((e) => <Link key={e.name} href={e.href} target="_blank" color="fg.info">{e.name}: {e.text}</Link>)}
        {d.dag_id && d.run_id && <Link href={runLink(d.dag_id, d.run_id)} color="fg.info">DAG run {d.run_id}</Link>}
        {d.dag_id && d.run_id && tasks.map((t) => (
          <Link key={`${t.task_id}-${t.map_index}`} fontSize="xs" href={taskLink(d.dag_id!, d.run_id!, t.task_id)} color="fg.muted">
            {t.task_id} ({t.state ?? "none"})
          </Link>
        ))}
      </Flex>
      {elastic.map((node) => <ElasticChart key={node} node={node} d={d} />)}
      {elastic.length === 0 && (plan?.scalable ?? []).map((s) => <SizeChart key={s.name} node={s.name} d={d} />)}
      {hasCache && <CacheChart id={d.id} />}
      <Flex gap={2} mb={2}>
        {(["resources", "events", "template"] as const).map((t) => (
          <Button key={t} size="xs" variant={tab === t ? "solid" : "outline"} onClick={() => setTab(t)}>{t}</Button>
        ))}
      </Flex>
      {tab === "resources" && (
        <Table.Root size="sm" variant="outline" data-testid="resources">
          <Table.Header><Table.Row>{["Node", "#", "State", "Resource", "Attributes", "Updated"].map((h) => <Table.ColumnHeader key={h}>{h}</Table.ColumnHeader>)}</Table.Row></Table.Header>
          <Table.Body>
            {d.resources.map((r) => (
              <Table.Row key={`${r.node_name}-${r.index}`}>
                <Table.Cell>{r.node_name}</Table.Cell><Table.Cell>{r.index}</Table.Cell>
                <Table.Cell><Badge colorPalette={r.state === "RUNNING" ? "green" : r.state === "ERROR" ? "red" : "blue"}>{r.state}</Badge></Table.Cell>
                <Table.Cell fontSize="xs">{r.resource_id}</Table.Cell>
                <Table.Cell fontSize="xs" maxW="md" wordBreak="break-all">{JSON.stringify(r.attributes)}</Table.Cell>
                <Table.Cell fontSize="xs">{when(r.updated_at)}</Table.Cell>
              </Table.Row>
            ))}
          </Table.Body>
        </Table.Root>
      )}
      {tab === "events" && (
        <Table.Root size="sm" variant="outline" data-testid="events">
          <Table.Header><Table.Row>{["At", "Kind", "Message"].map((h) => <Table.ColumnHeader key={h}>{h}</Table.ColumnHeader>)}</Table.Row></Table.Header>
          <Table.Body>
            {d.events.map((e) => (
              <Table.Row key={e.id}><Table.Cell fontSize="xs">{when(e.at)}</Table.Cell><Table.Cell><Badge>{e.kind}</Badge></Table.Cell><Table.Cell fontSize="sm">{e.message}</Table.Cell></Table.Row>
            ))}
          </Table.Body>
        </Table.Root>
      )}
      {tab === "template" && (
        <Box as="pre" fontSize="xs" p={3} bg="bg.muted" borderRadius="md" overflow="auto" data-testid="template">{d.template}</Box>
      )}
    </Box>
  );
}

/** Cluster size against time for one scalable node, from the deployment's events (a small SVG). */
function SizeChart({ node, d }: { node: string; d: Deployment }) {
  const points = clusterSize(d.events, node);
  if (points.length === 0) return null;
  const w = 560, h = 140, pad = 28;
  const t0 = points[0].at, t1 = Math.max(points[points.length - 1].at, Date.parse(d.updated_at), t0 + 1);
  const max = Math.max(1, ...points.map((q) => q.size));
  const x = (t: number) => pad + ((t - t0) / (t1 - t0)) * (w - 2 * pad);
  const y = (s: number) => h - pad - (s / max) * (h - 2 * pad);
  let path = `M ${x(points[0].at)} ${y(points[0].size)}`;
  for (const q of points.slice(1)) path += ` H ${x(q.at)} V ${y(q.size)}`;
  path += ` H ${x(t1)}`;
  return (
    <Box mb={3} data-testid={`chart-${node}`}>
      <Text fontSize="sm" fontWeight="semibold">{node}: instances over time</Text>
      <svg width={w} height={h} role="img" aria-label={`${node} size over time`}>
        <line x1={pad} y1={h - pad} x2={w - pad} y2={h - pad} stroke="currentColor" opacity={0.3} />
        <line x1={pad} y1={pad} x2={pad} y2={h - pad} stroke="currentColor" opacity={0.3} />
        <text x={4} y={y(max) + 4} fontSize="10" fill="currentColor">{max}</text>
        <text x={4} y={h - pad + 4} fontSize="10" fill="currentColor">0</text>
        <path d={path} fill="none" stroke="var(--chakra-colors-blue-500, #3182ce)" strokeWidth={2} />
        {points.map((q, i) => <circle key={i} cx={x(q.at)} cy={y(q.size)} r={3} fill="var(--chakra-colors-blue-500, #3182ce)" />)}
        <text x={pad} y={h - 8} fontSize="10" fill="currentColor">{new Date(t0).toLocaleTimeString()}</text>
        <text x={w - pad - 50} y={h - 8} fontSize="10" fill="currentColor">{new Date(t1).toLocaleTimeString()}</text>
      </svg>
    </Box>
  );
}

const CHART = { w: 860, h: 240, left: 60, right: 76, top: 14, bottom: 26 };
const COLOURS = {
  size: "var(--chakra-colors-blue-500, #3182ce)",
  queued: "var(--chakra-colors-orange-500, #dd6b20)",
  added: "var(--chakra-colors-green-500, #38a169)",
  retired: "var(--chakra-colors-red-500, #e53e3e)",
  written: "var(--chakra-colors-purple-400, #9f7aea)",
};

function timeAxis(t0: number, t1: number) {
  const { w, left, right } = CHART;
  return (t: number) => left + ((t - t0) / Math.max(1, t1 - t0)) * (w - left - right);
}

/** Axes, grid lines and tick labels; ticks are [y position, label]. */
function Axes({ t0, t1, leftLabel, left: leftTicks, rightLabel, right: rightTicks }: {
  t0: number; t1: number; leftLabel: string; left: [number, string][]; rightLabel?: string; right?: [number, string][];
}) {
  const { w, h, left, right, top, bottom } = CHART;
  const x = timeAxis(t0, t1);
  return (
    <g fontSize="10" fill="currentColor">
      {leftTicks.map(([y, label]) => (
        <g key={`l${y}`}>
          <line x1={left} y1={y} x2={w - right} y2={y} stroke="currentColor" opacity={0.1} />
          <text x={left - 4} y={y + 3} textAnchor="end">{label}</text>
        </g>
      ))}
      {(rightTicks ?? []).map(([y, label]) => <text key={`r${y}`} x={w - right + 4} y={y + 3}>{label}</text>)}
      <line x1={left} y1={h - bottom} x2={w - right} y2={h - bottom} stroke="currentColor" opacity={0.4} />
      <line x1={left} y1={top} x2={left} y2={h - bottom} stroke="currentColor" opacity={0.4} />
      {rightTicks && <line x1={w - right} y1={top} x2={w - right} y2={h - bottom} stroke="currentColor" opacity={0.4} />}
      <text x={12} y={h / 2} transform={`rotate(-90 12 ${h / 2})`} textAnchor="middle" opacity={0.7}>{leftLabel}</text>
      {rightLabel && <text x={w - 8} y={h / 2} transform={`rotate(90 ${w - 8} ${h / 2})`} textAnchor="middle" opacity={0.7}>{rightLabel}</text>}
      {timeTicks(t0, t1).map((t, i, all) => (
        <g key={t}>
          <line x1={x(t)} y1={h - bottom} x2={x(t)} y2={h - bottom + 4} stroke="currentColor" opacity={0.4} />
          <text x={x(t)} y={h - bottom + 16} textAnchor={i === 0 ? "start" : i === all.length - 1 ? "end" : "middle"}>
            {timeLabel(t, t1 - t0)}
          </text>
        </g>
      ))}
    </g>
  );
}

function Legend({ items }: { items: [string, string, boolean?][] }) {
  return (
    <Flex gap={4} fontSize="xs" color="fg.muted" wrap="wrap">
      {items.map(([label, colour, dashed]) => (
        <Flex key={label} align="center" gap={1}>
          <svg width={18} height={8} aria-hidden><line x1={0} y1={4} x2={18} y2={4} stroke={colour} strokeWidth={2} strokeDasharray={dashed ? "4 3" : undefined} /></svg>
          {label}
        </Flex>
      ))}
    </Flex>
  );
}

/** An elastic worker group: its size (steps) against the queued jobs over time, scaling decisions marked. */
function ElasticChart({ node, d }: { node: string; d: Deployment }) {
  const rounds = scalingRounds(d.events, node);
  const plot = elasticPlot(rounds);
  if (!plot) return null;
  const { h, top, bottom } = CHART;
  const x = timeAxis(plot.t0, plot.t1);
  const y = (v: number) => h - bottom - (v / plot.max) * (h - top - bottom);
  return (
    <Box mb={4} data-testid={`elastic-chart-${node}`} borderWidth="1px" borderColor="border" borderRadius="md" bg="bg.panel" p={3} maxW="fit-content">
      <Text fontSize="sm" fontWeight="semibold">{node}: workers against queued jobs ({rounds.length} scaling rounds)</Text>
      <Legend items={[["workers", COLOURS.size], ["queued jobs", COLOURS.queued, true], ["▲ workers added", COLOURS.added], ["▼ workers retired", COLOURS.retired]]} />
      <svg width={CHART.w} height={h} role="img" aria-label={`${node}: workers and queued jobs over time`} data-testid="elastic-plot">
        <Axes t0={plot.t0} t1={plot.t1} leftLabel="workers / queued jobs"
          left={ticks(plot.max).filter(Number.isInteger).map((v) => [y(v), String(v)])} />
        <path data-testid="series-queued" d={linePath(plot.queued, x, y)} fill="none" stroke={COLOURS.queued} strokeWidth={2} strokeDasharray="5 3" />
        <path data-testid="series-size" d={stepPath(plot.size, x, y, plot.t1)} fill="none" stroke={COLOURS.size} strokeWidth={2.5} />
        {plot.queued.map((q, i) => <circle key={i} cx={x(q.at)} cy={y(q.value)} r={2.5} fill={COLOURS.queued}><title>{`${new Date(q.at).toLocaleTimeString()}: ${q.value} queued`}</title></circle>)}
        {plot.decisions.map((r, i) => {
          const up = r.added.length >= r.retired.length;
          const cx = x(r.at), cy = y(r.after);
          const points = up ? `${cx},${cy - 11} ${cx - 6},${cy - 2} ${cx + 6},${cy - 2}` : `${cx},${cy + 11} ${cx - 6},${cy + 2} ${cx + 6},${cy + 2}`;
          return (
            <g key={i} data-testid="scale-marker" data-change={decisionText(r)}>
              <polygon points={points} fill={up ? COLOURS.added : COLOURS.retired} />
              <title>{`${new Date(r.at).toLocaleTimeString()}: ${decisionText(r)}, ${r.before} → ${r.after} workers, ${r.queued} queued\n${r.reasons.join("\n")}`}</title>
            </g>
          );
        })}
      </svg>
      <Box as="ol" fontSize="xs" pl={5} data-testid="scale-decisions" listStyleType="decimal">
        {plot.decisions.map((r, i) => (
          <Box as="li" key={i} mb={1}>
            <Text as="span" fontWeight="semibold" color={r.added.length >= r.retired.length ? "fg.success" : "fg.error"}>
              {new Date(r.at).toLocaleTimeString()} {decisionText(r)}
            </Text>{" "}
            <Text as="span" color="fg.muted">({r.before} → {r.after} workers, {r.queued} queued): {r.reasons.join("; ") || "policy decision"}</Text>
          </Box>
        ))}
      </Box>
    </Box>
  );
}

/** An XCache deployment: byte-hit ratio (line) and bytes written (bars) over time, from its access log. */
function CacheChart({ id }: { id: string }) {
  const { data: stats, error } = usePolling(
    () => api<CacheStats>(`cloud-paas-portal/api/deployments/${encodeURIComponent(id)}/cache-stats`), [id]);
  if (error) return <ErrorText error={error} />;
  if (!stats || stats.caches.length === 0) return null;
  const plot = cachePlot(stats);
  const { w, h, right, top, bottom } = CHART;
  return (
    <Box mb={4} data-testid="cache-chart" borderWidth="1px" borderColor="border" borderRadius="md" bg="bg.panel" p={3} maxW="fit-content">
      <Text fontSize="sm" fontWeight="semibold">XCache: byte-hit ratio and bytes written ({stats.bucket_s} s buckets)</Text>
      {!plot ? (
        <Text fontSize="xs" color="fg.muted" data-testid="cache-empty">
          No accesses in the access log yet (labels {stats.labels.join(", ")}): the ingest DAG or the monitor fills it.
        </Text>
      ) : (() => {
        const x = timeAxis(plot.t0, plot.t1);
        const yRatio = (v: number) => h - bottom - v * (h - top - bottom);
        const yBytes = (v: number) => h - bottom - (v / plot.maxWritten) * (h - top - bottom);
        return (
          <>
            <Legend items={[["byte-hit ratio", COLOURS.size], ["bytes written", COLOURS.written]]} />
            <svg width={w} height={h} role="img" aria-label="byte-hit ratio and bytes written over time" data-testid="cache-plot">
              <Axes t0={plot.t0} t1={plot.t1} leftLabel="byte-hit ratio"
                left={[0, 0.25, 0.5, 0.75, 1].map((v) => [yRatio(v), `${v * 100}%`])}
                rightLabel="bytes written" right={byteTicks(plot.maxWritten).map((v) => [yBytes(v), formatBytes(v)])} />
              <g data-testid="series-written">
                {plot.written.map((b, i) => (
                  <rect key={i} x={x(b.start) + 1} width={Math.max(1, x(b.end) - x(b.start) - 2)} y={yBytes(b.value)}
                    height={h - bottom - yBytes(b.value)} fill={COLOURS.written} opacity={0.55}>
                    <title>{`${new Date(b.start).toLocaleTimeString()}: ${formatBytes(b.value)} written`}</title>
                  </rect>
                ))}
              </g>
              <path data-testid="series-ratio" d={linePath(plot.ratio, x, yRatio)} fill="none" stroke={COLOURS.size} strokeWidth={2.5} />
              {plot.ratio.map((p, i) => (
                <circle key={i} cx={x(p.at)} cy={yRatio(p.value)} r={3} fill={COLOURS.size}>
                  <title>{`${new Date(p.at).toLocaleTimeString()}: ${Math.round(p.value * 100)}% of bytes from the cache`}</title>
                </circle>
              ))}
            </svg>
            <Text fontSize="xs" color="fg.muted" data-testid="cache-totals">
              {formatBytes(plot.totalRead)} read, {plot.totalRead ? Math.round((plot.totalHit / plot.totalRead) * 100) : 0}% from the cache;
              {" "}{formatBytes(plot.totalWritten)} written to its disk (first reads, misses, prefetches) · labels {stats.labels.join(", ")}
            </Text>
          </>
        );
      })()}
    </Box>
  );
}
