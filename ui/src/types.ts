import type { InputField } from "./forms";

export interface DagRef {
  dag_id: string;
  backend: string | null;
  keeps: boolean;
}

export interface ScalableNode {
  name: string;
  min: number | null;
  max: number | null;
  count: number | null;
}

export interface Application {
  name: string;
  display_name: string;
  description: string;
  icon: string;
  category: string;
  dags: DagRef[];
  portlet: { name: string; label: string }[] | null;
  inputs: InputField[];
  nodes: string[];
  scalable: ScalableNode[];
}

export interface Resource {
  node_name: string;
  index: number;
  resource_id: string | null;
  state: string;
  attributes: Record<string, unknown>;
  updated_at: string;
}

export interface DeploymentEvent {
  id: number;
  at: string;
  kind: string;
  message: string;
  data: Record<string, unknown> | null;
}

export interface Deployment {
  id: string;
  template: string;
  inputs: Record<string, unknown>;
  owner: string | null;
  backend: string;
  status: string;
  status_reason: string | null;
  outputs: Record<string, unknown>;
  dag_id: string | null;
  run_id: string | null;
  created_at: string;
  updated_at: string;
  resources: Resource[];
  events: DeploymentEvent[];
}

export interface Plan {
  nodes: string[];
  scalable: ScalableNode[];
}
