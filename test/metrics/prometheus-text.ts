/**
 * A small strict parser of the Prometheus text exposition format (0.0.4), for tests: every line
 * must be a comment (# HELP, # TYPE, other #), blank, or a sample `name{labels} value`; every
 * sample's family must have a TYPE; label values must be properly escaped; values must be
 * numbers (or NaN, +Inf, -Inf). Throws naming the line on anything else.
 */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Family {
  readonly name: string;
  readonly type: string;
  readonly help: string;
  readonly samples: Sample[];
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const SAMPLE = new RegExp(`^(${NAME})(\\{(.*)\\})?\\s+(\\S+)(\\s+-?\\d+)?$`);
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const family = (name: string): Family => {
    let f = families.get(name);
    if (f === undefined) {
      f = { name, type: "", help: "", samples: [] };
      families.set(name, f);
    }
    return f;
  };
  text.split("\n").forEach((line, i) => {
    const where = `line ${i + 1}: ${line}`;
    if (line.trim() === "") return;
    if (line.startsWith("# HELP ")) {
      const [, name, help] = /^# HELP (\S+) ?(.*)$/.exec(line) ?? [];
      if (name === undefined) throw new Error(`bad HELP, ${where}`);
      (family(name) as { help: string }).help = help ?? "";
      return;
    }
    if (line.startsWith("# TYPE ")) {
      const [, name, type] = /^# TYPE (\S+) (\S+)$/.exec(line) ?? [];
      if (name === undefined || type === undefined || !TYPES.has(type)) throw new Error(`bad TYPE, ${where}`);
      const f = family(name);
      if (f.type !== "") throw new Error(`second TYPE for ${name}, ${where}`);
      (f as { type: string }).type = type;
      return;
    }
    if (line.startsWith("#")) return;
    const match = SAMPLE.exec(line);
    if (match === null) throw new Error(`bad sample, ${where}`);
    const [, name = "", , labelText = "", valueText = ""] = match;
    const labels: Record<string, string> = {};
    let rest = labelText;
    while (rest !== "") {
      const label = LABEL.exec(rest);
      if (label === null) throw new Error(`bad labels, ${where}`);
      const [all, key = "", value = ""] = label;
      if (key in labels) throw new Error(`repeated label ${key}, ${where}`);
      labels[key] = value.replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
      rest = rest.slice(all.length);
    }
    const value = valueText === "+Inf" ? Infinity : valueText === "-Inf" ? -Infinity : valueText === "NaN" ? NaN : Number(valueText);
    if (Number.isNaN(value) && valueText !== "NaN") throw new Error(`bad value, ${where}`);
    const base = familyOf(name, families);
    if (base === undefined) throw new Error(`sample without a TYPE, ${where}`);
    base.samples.push({ name, labels, value });
  });
  return families;
}

/** The family a sample belongs to (histogram _bucket/_sum/_count, summary _sum/_count). */
function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const exact = families.get(name);
  if (exact !== undefined && exact.type !== "") return exact;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!name.endsWith(suffix)) continue;
    const f = families.get(name.slice(0, -suffix.length));
    if (f !== undefined && (f.type === "histogram" || f.type === "summary")) return f;
  }
  return undefined;
}
