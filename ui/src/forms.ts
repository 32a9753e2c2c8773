// Form generation and client-side checks for TOSCA inputs (pure functions: unit-tested by vitest).

export interface Constraint {
  op: string;
  limit: unknown;
  message: string; // the TOSCA constraint in words, as the run would refuse the value
}

export interface InputField {
  name: string;
  type: string;
  description: string;
  default: unknown;
  has_default: boolean;
  required: boolean;
  secret: boolean;
  constraints: Constraint[];
  label?: string;
}

export type Widget = "number" | "integer" | "checkbox" | "select" | "password" | "json" | "text";

/** Return the widget a TOSCA input is edited with. */
export function widgetFor(field: InputField): Widget {
  if (field.constraints.some((c) => c.op === "valid_values")) return "select";
  if (field.secret) return "password";
  switch (field.type) {
    case "integer":
      return "integer";
    case "float":
      return "number";
    case "boolean":
      return "checkbox";
    case "list":
    case "map":
    case "range":
      return "json";
    default:
      return field.type.includes(".") && !field.type.startsWith("scalar-unit") ? "json" : "text";
  }
}

/** Return the text a field starts with (its default; secrets start empty). */
export function initialText(field: InputField): string {
  if (field.secret || !field.has_default || field.default === null || field.default === undefined) return "";
  if (typeof field.default === "object") return JSON.stringify(field.default);
  return String(field.default);
}

const SIZE: Record<string, number> = {
  b: 1, kb: 1e3, kib: 1024, mb: 1e6, mib: 1024 ** 2, gb: 1e9, gib: 1024 ** 3, tb: 1e12, tib: 1024 ** 4,
};
const TIME: Record<string, number> = { d: 86400, h: 3600, m: 60, s: 1, ms: 1e-3, us: 1e-6, ns: 1e-9 };
const FREQUENCY: Record<string, number> = { hz: 1, khz: 1e3, mhz: 1e6, ghz: 1e9 };

/** Return a scalar-unit value's magnitude in its base unit, or null if it is not one. */
export function scalarMagnitude(type: string, value: unknown): number | null {
  const units = type === "scalar-unit.size" ? SIZE : type === "scalar-unit.time" ? TIME
    : type === "scalar-unit.frequency" ? FREQUENCY : null;
  if (units === null) return null;
  const match = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*$/.exec(String(value));
  if (!match) return null;
  const factor = units[match[2].toLowerCase()];
  return factor === undefined ? null : Number(match[1]) * factor;
}

/** Convert what was typed into the value sent to the DAG run; throw Error with the reason if it cannot be. */
export function parseValue(field: InputField, text: string | boolean): unknown {
  const widget = widgetFor(field);
  if (widget === "checkbox") return Boolean(text);
  const raw = String(text).trim();
  if (field.type === "integer") {
    if (!/^[-+]?\d+$/.test(raw)) throw new Error("must be a whole number");
    return Number.parseInt(raw, 10);
  }
  if (field.type === "float") {
    if (raw === "" || Number.isNaN(Number(raw))) throw new Error("must be a number");
    return Number(raw);
  }
  if (field.type.startsWith("scalar-unit.")) {
    if (scalarMagnitude(field.type, raw) === null) throw new Error("must be a number and a unit (e.g. 2 GB)");
    return raw;
  }
  if (widget === "json") {
    try {
      return JSON.parse(raw);
    } catch {
      throw new Error("must be JSON (a list or a map)");
    }
  }
  return String(text);
}

function comparable(field: InputField, value: unknown): number | string | null {
  if (typeof value === "number") return value;
  const scalar = scalarMagnitude(field.type, value);
  if (scalar !== null) return scalar;
  return typeof value === "string" ? value : null;
}

/** Return whether a value satisfies one TOSCA constraint (unknown operators pass: the run checks them). */
export function satisfies(field: InputField, value: unknown, op: string, limit: unknown): boolean {
  const v = comparable(field, value);
  const bound = (x: unknown) => comparable(field, x);
  switch (op) {
    case "equal":
      return v === bound(limit);
    case "greater_than":
      return v !== null && (bound(limit) as number) < (v as number);
    case "greater_or_equal":
      return v !== null && (bound(limit) as number) <= (v as number);
    case "less_than":
      return v !== null && (v as number) < (bound(limit) as number);
    case "less_or_equal":
      return v !== null && (v as number) <= (bound(limit) as number);
    case "in_range": {
      const [low, high] = limit as unknown[];
      return v !== null && (low === "UNBOUNDED" || (bound(low) as number) <= (v as number))
        && (high === "UNBOUNDED" || (v as number) <= (bound(high) as number));
    }
    case "valid_values":
      return (limit as unknown[]).some((allowed) => String(allowed) === String(value));
    case "length":
      return lengthOf(value) === limit;
    case "min_length":
      return lengthOf(value) >= (limit as number);
    case "max_length":
      return lengthOf(value) <= (limit as number);
    case "pattern":
      return new RegExp(`^(?:${String(limit)})$`).test(String(value));
    default:
      return true;
  }
}

function lengthOf(value: unknown): number {
  if (Array.isArray(value) || typeof value === "string") return value.length;
  if (value && typeof value === "object") return Object.keys(value).length;
  return 0;
}

/** Return the error to show under a field ("" when the value is fine). */
export function fieldError(field: InputField, text: string | boolean): string {
  if (typeof text === "string" && text.trim() === "") {
    return field.required ? "is required" : "";
  }
  let value: unknown;
  try {
    value = parseValue(field, text);
  } catch (err) {
    return (err as Error).message;
  }
  for (const c of field.constraints) {
    if (!satisfies(field, value, c.op, c.limit)) return c.message;
  }
  return "";
}

/** Return the DAG run conf from the form's texts (empty optional fields are left to their defaults). */
export function buildConf(fields: InputField[], texts: Record<string, string | boolean>): Record<string, unknown> {
  const conf: Record<string, unknown> = {};
  for (const field of fields) {
    const text = texts[field.name];
    if (text === undefined || (typeof text === "string" && text.trim() === "")) continue;
    conf[field.name] = parseValue(field, text);
  }
  return conf;
}
