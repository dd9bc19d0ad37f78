/**
 * Field readers for untrusted, already-parsed input (the output of a YAML or JSON parser).
 *
 * Every reader records what is wrong in the shared issue list and returns `undefined` instead of
 * throwing, so one pass over a document reports every problem. `null` counts as absent
 * everywhere (YAML writes an empty value as null), so `valid_until:` with nothing after it means
 * "not set", as the docs promise.
 */
import type { RuleIssue } from "./errors.js";

export type Mapping = Readonly<Record<string, unknown>>;

/** `at("licenses[2]", "plan")` is "licenses[2].plan"; the root path is "". */
export function at(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

/** `index("licenses", 2)` is "licenses[2]". */
export function index(path: string, i: number): string {
  return `${path}[${i}]`;
}

export class Checker {
  readonly issues: RuleIssue[] = [];

  report(path: string, message: string): void {
    this.issues.push({ path, message });
  }

  /**
   * The value as a mapping whose keys are all in `allowed`, or undefined. Unknown keys are
   * reported one by one (a typo must never be silently ignored), with a suggestion when one
   * allowed key is close; the known keys of such a mapping are still read.
   */
  mapping(value: unknown, path: string, allowed: readonly string[]): Mapping | undefined {
    if (!isPlainObject(value)) {
      this.report(path, "must be a mapping");
      return undefined;
    }
    for (const key of Object.keys(value)) {
      if (!allowed.includes(key)) this.report(at(path, key), unknownFieldMessage(key, allowed));
    }
    return value;
  }

  /** The value as a list; absent is an empty list. */
  list(value: unknown, path: string): readonly unknown[] | undefined {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) {
      this.report(path, "must be a list");
      return undefined;
    }
    return value;
  }

  /** A string field; `pattern` failures are reported with `patternMessage`. */
  string(m: Mapping, key: string, path: string, rule: StringRule): string | undefined {
    const value = field(m, key);
    const p = at(path, key);
    if (value === undefined) {
      if (rule.required) this.report(p, "required");
      return undefined;
    }
    if (typeof value !== "string") {
      this.report(p, "must be a string");
      return undefined;
    }
    if (rule.pattern !== undefined && !rule.pattern.regex.test(value)) {
      this.report(p, rule.pattern.message);
      return undefined;
    }
    return value;
  }

  /** One of `choices`; absent gives `fallback` (undefined when required or without default). */
  choice<T extends string>(
    m: Mapping,
    key: string,
    path: string,
    choices: readonly T[],
    fallback?: T,
  ): T | undefined {
    const value = field(m, key);
    const p = at(path, key);
    if (value === undefined) {
      if (fallback === undefined) this.report(p, "required");
      return fallback;
    }
    if (typeof value !== "string" || !(choices as readonly string[]).includes(value)) {
      this.report(p, `must be one of: ${choices.join(", ")}`);
      return undefined;
    }
    return value as T;
  }

  /**
   * A safe integer ≥ 0. Accepts bigint because the YAML parser is run with `intAsBigInt`, so
   * that a too-large integer is reported instead of being silently rounded.
   */
  integer(m: Mapping, key: string, path: string): number | undefined {
    const value = field(m, key);
    if (value === undefined) return undefined;
    return this.integerValue(value, at(path, key));
  }

  integerValue(value: unknown, path: string): number | undefined {
    const n = typeof value === "bigint" ? value : typeof value === "number" && Number.isInteger(value) ? value : undefined;
    if (n === undefined || n < 0) {
      this.report(path, "must be an integer >= 0");
      return undefined;
    }
    if (n > Number.MAX_SAFE_INTEGER) {
      this.report(path, `must be at most ${Number.MAX_SAFE_INTEGER}`);
      return undefined;
    }
    return Number(n);
  }

  /** A number (integer or not), for ratios; undefined when absent or wrong. */
  number(m: Mapping, key: string, path: string): number | undefined {
    const value = field(m, key);
    if (value === undefined) return undefined;
    if (typeof value === "bigint") return Number(value);
    if (typeof value !== "number" || !Number.isFinite(value)) {
      this.report(at(path, key), "must be a number");
      return undefined;
    }
    return value;
  }

  boolean(m: Mapping, key: string, path: string, fallback: boolean): boolean {
    const value = field(m, key);
    if (value === undefined) return fallback;
    if (typeof value !== "boolean") {
      this.report(at(path, key), "must be true or false");
      return fallback;
    }
    return value;
  }

  /**
   * An RFC 3339 date-time with an explicit offset, returned as a canonical ISO UTC string
   * (millisecond precision: finer digits are dropped, as the database would keep microseconds
   * we cannot compare). A Date object (programmatic callers) is accepted as is.
   */
  timestamp(m: Mapping, key: string, path: string): string | undefined {
    const value = field(m, key);
    if (value === undefined) return undefined;
    if (value instanceof Date && !Number.isNaN(value.getTime())) return value.toISOString();
    if (typeof value === "string" && isRfc3339(value)) return new Date(value).toISOString();
    this.report(at(path, key), "must be an RFC 3339 date-time with a time zone, e.g. 2026-01-01T00:00:00Z");
    return undefined;
  }

  /**
   * A list of distinct values out of `rule.choices`, returned sorted; undefined when absent (so
   * the caller can apply its default; an explicit empty list is returned as []).
   */
  choiceList<T extends string>(m: Mapping, key: string, path: string, rule: ChoiceListRule<T>): T[] | undefined {
    const value = field(m, key);
    if (value === undefined) return undefined;
    const p = at(path, key);
    const items = this.list(value, p) ?? [];
    const seen = new Set<T>();
    items.forEach((item, i) => {
      const ip = index(p, i);
      if (typeof item !== "string") this.report(ip, "must be a string");
      else if (!(rule.choices as readonly string[]).includes(item)) {
        this.report(ip, rule.explain?.(item) ?? `must be one of: ${rule.choices.join(", ")}`);
      } else if (seen.has(item as T)) this.report(ip, `duplicate value "${item}"`);
      else seen.add(item as T);
    });
    return [...seen].sort(compareStrings);
  }

  /** A list of distinct names, returned sorted; absent is empty. */
  names(m: Mapping, key: string, path: string, pattern: Pattern): string[] {
    const p = at(path, key);
    const items = this.list(field(m, key), p) ?? [];
    const seen = new Set<string>();
    items.forEach((item, i) => {
      const ip = index(p, i);
      if (typeof item !== "string" || !pattern.regex.test(item)) {
        this.report(ip, typeof item === "string" ? pattern.message : "must be a string");
      } else if (seen.has(item)) {
        this.report(ip, `duplicate value "${item}"`);
      } else {
        seen.add(item);
      }
    });
    return [...seen].sort(compareStrings);
  }
}

export interface ChoiceListRule<T extends string> {
  readonly choices: readonly T[];
  /** A specific message for a value outside `choices` (e.g. why "none" is refused), if any. */
  readonly explain?: (value: string) => string | undefined;
}

export interface Pattern {
  readonly regex: RegExp;
  /** What to say when the regex does not match, e.g. "must be a slug (...)". */
  readonly message: string;
}

export interface StringRule {
  readonly required: boolean;
  readonly pattern?: Pattern;
}

/** A field's value, with null read as absent. */
export function field(m: Mapping, key: string): unknown {
  const value = m[key];
  return value === null ? undefined : value;
}

/** Code-unit order: deterministic and locale-independent, unlike localeCompare. */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isPlainObject(value: unknown): value is Mapping {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

function isRfc3339(s: string): boolean {
  const m = RFC3339.exec(s);
  if (m === null) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  const dateOk = month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth;
  return dateOk && hour <= 23 && minute <= 59 && second <= 59 && !Number.isNaN(Date.parse(s));
}

function unknownFieldMessage(key: string, allowed: readonly string[]): string {
  // Close enough to be a typo: one edit for short keys, two for longer ones.
  const tolerance = Math.min(2, Math.max(1, Math.floor(key.length / 3)));
  const near = allowed.find((candidate) => editDistance(key, candidate) <= tolerance);
  return near === undefined ? "unknown field" : `unknown field (did you mean "${near}"?)`;
}

/** Edit distance counting an adjacent transposition as one edit ("nmae" → "name"). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const cell = (i: number, j: number): number => d[i]?.[j] ?? Number.POSITIVE_INFINITY;
  for (let i = 1; i <= a.length; i++) {
    const row = d[i] ?? [];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(cell(i - 1, j) + 1, cell(i, j - 1) + 1, cell(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, cell(i - 2, j - 2) + 1);
      row[j] = best;
    }
  }
  return cell(a.length, b.length);
}
