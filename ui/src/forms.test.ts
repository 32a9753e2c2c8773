import { describe, expect, it } from "vitest";
import { buildConf, fieldError, InputField, scalarMagnitude, widgetFor } from "./forms";

const field = (over: Partial<InputField>): InputField => ({
  name: "x", type: "string", description: "", default: null, has_default: false, required: false,
  secret: false, constraints: [], ...over,
});

describe("widgets", () => {
  it("maps TOSCA types to inputs", () => {
    expect(widgetFor(field({ type: "integer" }))).toBe("integer");
    expect(widgetFor(field({ type: "boolean" }))).toBe("checkbox");
    expect(widgetFor(field({ type: "map" }))).toBe("json");
    expect(widgetFor(field({ secret: true }))).toBe("password");
    expect(widgetFor(field({ constraints: [{ op: "valid_values", limit: ["A"], message: "" }] }))).toBe("select");
  });
});

describe("constraints", () => {
  const port = field({
    type: "integer",
    constraints: [{ op: "in_range", limit: [1, 65535], message: "must be from 1 to 65535" }],
  });
  it("refuses an out-of-range value with the constraint's message", () => {
    expect(fieldError(port, "70000")).toBe("must be from 1 to 65535");
    expect(fieldError(port, "8080")).toBe("");
  });
  it("refuses the wrong type", () => {
    expect(fieldError(port, "eighty")).toBe("must be a whole number");
    expect(fieldError(field({ type: "float" }), "x")).toBe("must be a number");
  });
  it("compares scalar units by magnitude", () => {
    const mem = field({
      type: "scalar-unit.size",
      constraints: [{ op: "greater_or_equal", limit: "512 MB", message: "must be at least 512 MB" }],
    });
    expect(scalarMagnitude("scalar-unit.size", "1 GiB")).toBe(1024 ** 3);
    expect(fieldError(mem, "256 MB")).toBe("must be at least 512 MB");
    expect(fieldError(mem, "2 GB")).toBe("");
    expect(fieldError(mem, "lots")).toMatch(/unit/);
  });
  it("checks required fields, patterns and lengths", () => {
    expect(fieldError(field({ required: true }), " ")).toBe("is required");
    const id = field({ constraints: [{ op: "pattern", limit: "[a-z0-9-]+", message: "must match" }] });
    expect(fieldError(id, "Bad Id")).toBe("must match");
    expect(fieldError(field({ constraints: [{ op: "max_length", limit: 3, message: "too long" }] }), "abcd"))
      .toBe("too long");
  });
});

describe("conf", () => {
  it("types values and leaves empty optional fields out", () => {
    const fields = [field({ name: "n", type: "integer" }), field({ name: "cpus", type: "float" }), field({ name: "s" })];
    expect(buildConf(fields, { n: "3", cpus: "0.5", s: "" })).toEqual({ n: 3, cpus: 0.5 });
  });
});
