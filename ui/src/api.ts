// Calls to Airflow's REST API and the plugin's APIs, with the UI's own login (the `_token` cookie that
// Airflow's UI sends with credentials: "include"); paths are relative to the UI's <base href>.

export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

export function url(path: string): string {
  return new URL(path.replace(/^\//, ""), document.baseURI).href;
}

export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const response = await fetch(url(path), {
    credentials: "include",
    ...init,
    headers: { Accept: "application/json", ...(init.body ? { "Content-Type": "application/json" } : {}), ...init.headers },
  });
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const detail = body?.detail;
    const message = typeof detail === "string" ? detail : detail ? JSON.stringify(detail) : response.statusText;
    throw new ApiError(response.status, `${response.status}: ${message}`);
  }
  return body as T;
}

/** Trigger a DAG run with conf through Airflow's REST API (unpausing the DAG, as `cloud-paas` does); return its run id. */
export async function triggerDag(dagId: string, conf: Record<string, unknown>): Promise<string> {
  // a DAG is paused when first parsed; a user who may not unpause it still gets the run queued
  await api(`api/v2/dags/${encodeURIComponent(dagId)}`, { method: "PATCH", body: JSON.stringify({ is_paused: false }) })
    .catch(() => undefined);
  const run = await api<{ dag_run_id: string }>(`api/v2/dags/${encodeURIComponent(dagId)}/dagRuns`, {
    method: "POST",
    body: JSON.stringify({ logical_date: null, conf }),
  });
  return run.dag_run_id;
}

export const runLink = (dagId: string, runId: string) =>
  url(`dags/${encodeURIComponent(dagId)}/runs/${encodeURIComponent(runId)}`);
export const taskLink = (dagId: string, runId: string, taskId: string) =>
  url(`dags/${encodeURIComponent(dagId)}/runs/${encodeURIComponent(runId)}/tasks/${encodeURIComponent(taskId)}`);
