/**
 * Route rules: which feature (and how many units of it) a proxied request uses, by HTTP method
 * and path prefix. The fallback for requests whose proxy did not name the feature itself
 * (Envoy context_extensions, or the X-License-Feature header of forward-auth).
 *
 * The rules come from the rules file (the lead loads them); this module only matches.
 */

/** One rule: requests whose path starts with `pathPrefix` (and, if set, whose method is `method`). */
export interface RouteRule {
  /** HTTP method in upper case (`POST`); any method when absent. */
  readonly method?: string;
  /** Plain string prefix of the normalized path, starting with "/" (`/v1/export`). */
  readonly pathPrefix: string;
  /** The feature key checked. */
  readonly feature: string;
  /** Units consumed per request: an integer from 0 (ask without consuming). */
  readonly cost: number;
}

export type RouteTable = readonly RouteRule[];

/**
 * Finds the rule for a request: among the rules whose prefix starts the normalized path and
 * whose method matches, the longest prefix wins; at equal length a rule naming the method beats
 * one that does not. Undefined when no rule matches.
 */
export type RouteMatcher = (method: string, path: string) => RouteRule | undefined;

/**
 * Builds the matcher for `table`.
 *
 * @throws Error naming the rule's index when a rule is malformed (prefix not starting with "/",
 *   empty feature, cost not an integer from 0), so a bad rules file fails at start.
 */
export function createRouteMatcher(table: RouteTable): RouteMatcher {
  table.forEach(validateRule);
  // Most specific first, so the first match is the answer.
  const rules = [...table].sort(
    (a, b) => b.pathPrefix.length - a.pathPrefix.length || Number(b.method !== undefined) - Number(a.method !== undefined),
  );
  if (rules.length === 0) return () => undefined;
  return (method, path) => {
    const normalized = normalizePath(path);
    for (const rule of rules) {
      if (rule.method !== undefined && rule.method !== method) continue;
      if (normalized.startsWith(rule.pathPrefix)) return rule;
    }
    return undefined;
  };
}

function validateRule(rule: RouteRule, index: number): void {
  const where = `routes[${index}]`;
  if (!rule.pathPrefix.startsWith("/")) throw new Error(`${where}.pathPrefix must start with "/" (got "${rule.pathPrefix}")`);
  if (rule.feature.length === 0) throw new Error(`${where}.feature must not be empty`);
  if (!Number.isSafeInteger(rule.cost) || rule.cost < 0) throw new Error(`${where}.cost must be an integer from 0 (got ${rule.cost})`);
  if (rule.method !== undefined && rule.method !== rule.method.toUpperCase()) {
    throw new Error(`${where}.method must be upper case (got "${rule.method}")`);
  }
}

/**
 * The path a request target names, as a router would see it: without the query string or
 * fragment, percent-decoded, with `//` merged and `.` / `..` segments resolved. Proxies match
 * their own routes on the normalized path, so matching on the raw target would let
 * `/public/../admin` be priced as `/public`. Cheap for ordinary paths (one scan, no copy).
 */
export function normalizePath(target: string): string {
  let end = target.length;
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c === 0x3f /* ? */ || c === 0x23 /* # */) {
      end = i;
      break;
    }
  }
  let path = end === target.length ? target : target.slice(0, end);
  if (path.includes("%")) path = percentDecoded(path);
  if (!path.startsWith("/")) path = `/${path}`;
  if (!path.includes("//") && !path.includes("/.")) return path;
  return resolveSegments(path);
}

function percentDecoded(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    // Malformed escapes: match the raw text, which then matches no decoded prefix by accident.
    return path;
  }
}

function resolveSegments(path: string): string {
  const out: string[] = [];
  const segments = path.split("/");
  for (const segment of segments) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") out.pop();
    else out.push(segment);
  }
  const trailing = path.endsWith("/") || path.endsWith("/.") || path.endsWith("/..");
  const joined = `/${out.join("/")}`;
  return trailing && joined !== "/" ? `${joined}/` : joined;
}
