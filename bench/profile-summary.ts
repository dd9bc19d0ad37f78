/**
 * Summarizes a V8 .cpuprofile (node --cpu-prof): self time per function and per area (our
 * source files, grpc-js, protobuf-es, Node's HTTP/2, GC...), as a share of the busy time (all
 * samples except "(idle)").
 *
 * Positions in compiled files are mapped back to the TypeScript source through the .js.map
 * files tsc writes next to them, so `src/licensing/check.ts:140` names a real line.
 *
 * Usage: node dist/bench/profile-summary.js FILE.cpuprofile [top=25]
 */
import { existsSync, readFileSync } from "node:fs";
import { SourceMap } from "node:module";
import { fileURLToPath } from "node:url";
import { dirname, relative, resolve } from "node:path";

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  /** 0-based. */
  readonly lineNumber: number;
  readonly columnNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
}

export interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  /** µs since the previous sample, one per sample. */
  readonly timeDeltas: readonly number[];
}

export interface FunctionCost {
  /** "name (file:line)". */
  readonly name: string;
  readonly area: string;
  readonly selfMs: number;
  /** Share of busy time, 0..100. */
  readonly percent: number;
}

export interface ProfileSummary {
  readonly totalMs: number;
  readonly idleMs: number;
  readonly busyMs: number;
  readonly functions: readonly FunctionCost[];
  /** Self time per area, largest first. */
  readonly areas: readonly { readonly area: string; readonly selfMs: number; readonly percent: number }[];
}

/** Where a frame's code lives: our file (src/...), a package, a Node internal, or a V8 pseudo-frame. */
export function areaOf(url: string, functionName: string, root: string): string {
  if (url === "") return functionName.startsWith("(") ? functionName : "(native)";
  if (url.startsWith("node:")) {
    const path = url.slice("node:".length).replace(/^internal\//, "");
    return `node:${path.split("/")[0]?.replace(/\.js$/, "") ?? path}`;
  }
  const file = url.startsWith("file://") ? fileURLToPath(url) : url;
  const packageMatch = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file);
  if (packageMatch !== null) return packageMatch[1] ?? file;
  // dist/src/x.js is compiled from src/x.ts: name the source.
  return relative(root, file).replace(/^dist\//, "").replace(/\.js$/, ".ts");
}

/** Maps compiled positions back to sources; caches one SourceMap per file. */
class SourcePositions {
  readonly #maps = new Map<string, SourceMap | null>();

  constructor(private readonly root: string) {}

  /** "src/x.ts:LINE" (1-based) for our compiled files, "file:LINE" otherwise. */
  locate(frame: CallFrame): string {
    if (frame.url === "") return "";
    if (!frame.url.startsWith("file://")) return `${frame.url}:${frame.lineNumber + 1}`;
    const file = fileURLToPath(frame.url);
    const map = this.#map(file);
    const entry = map?.findEntry(frame.lineNumber, frame.columnNumber);
    if (entry !== undefined && entry !== null && "originalSource" in entry && typeof entry.originalSource === "string") {
      const source = entry.originalSource.startsWith("file://") ? fileURLToPath(entry.originalSource) : entry.originalSource;
      const resolved = resolve(dirname(file), source);
      return `${relative(this.root, resolved)}:${entry.originalLine + 1}`;
    }
    return `${relative(this.root, file)}:${frame.lineNumber + 1}`;
  }

  #map(file: string): SourceMap | null {
    let map = this.#maps.get(file);
    if (map === undefined) {
      map = null;
      const mapFile = `${file}.map`;
      if (existsSync(mapFile)) {
        try {
          map = new SourceMap(JSON.parse(readFileSync(mapFile, "utf8")) as ConstructorParameters<typeof SourceMap>[0]);
        } catch {
          map = null; // an unreadable map: positions stay compiled ones
        }
      }
      this.#maps.set(file, map);
    }
    return map;
  }
}

export interface SummaryOptions {
  /** Functions kept, largest self time first. Default 25. */
  readonly top?: number;
  /** Ignore samples taken before this many ms after the profile started (the process's start-up). */
  readonly fromOffsetMs?: number;
}

/** Self time per function and per area. */
export function summarizeProfile(profile: CpuProfile, root: string, options: SummaryOptions = {}): ProfileSummary {
  const top = options.top ?? 25;
  const fromOffsetUs = (options.fromOffsetMs ?? 0) * 1000;
  const byId = new Map<number, ProfileNode>();
  for (const node of profile.nodes) byId.set(node.id, node);
  const selfUsById = new Map<number, number>();
  let offsetUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    const delta = profile.timeDeltas[i] ?? 0;
    offsetUs += delta;
    if (id === undefined || offsetUs < fromOffsetUs) continue;
    selfUsById.set(id, (selfUsById.get(id) ?? 0) + delta);
  }
  const positions = new SourcePositions(root);
  const byFunction = new Map<string, { area: string; us: number }>();
  const byArea = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUsById) {
    const frame = byId.get(id)?.callFrame;
    if (frame === undefined || us <= 0) continue;
    totalUs += us;
    if (frame.functionName === "(idle)") {
      idleUs += us;
      continue;
    }
    const area = areaOf(frame.url, frame.functionName, root);
    const where = positions.locate(frame);
    const name = `${frame.functionName || "(anonymous)"}${where === "" ? "" : ` (${where})`}`;
    const entry = byFunction.get(name) ?? { area, us: 0 };
    entry.us += us;
    byFunction.set(name, entry);
    byArea.set(area, (byArea.get(area) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const percent = (us: number) => (busyUs > 0 ? (100 * us) / busyUs : 0);
  const functions = [...byFunction.entries()]
    .sort((a, b) => b[1].us - a[1].us)
    .slice(0, top)
    .map(([name, { area, us }]) => ({ name, area, selfMs: us / 1000, percent: percent(us) }));
  const areas = [...byArea.entries()].sort((a, b) => b[1] - a[1]).map(([area, us]) => ({ area, selfMs: us / 1000, percent: percent(us) }));
  return { totalMs: totalUs / 1000, idleMs: idleUs / 1000, busyMs: busyUs / 1000, functions, areas };
}

/** Markdown tables of a summary (areas, then the top functions). */
export function profileMarkdown(summary: ProfileSummary, areas = 15): string {
  const lines = [
    `Profiled ${(summary.totalMs / 1000).toFixed(1)} s, busy ${(summary.busyMs / 1000).toFixed(1)} s (idle ${(summary.idleMs / 1000).toFixed(1)} s). Percentages are of busy time.`,
    "",
    "| area | self ms | % busy |",
    "|---|---:|---:|",
    ...summary.areas.slice(0, areas).map((a) => `| ${a.area} | ${a.selfMs.toFixed(0)} | ${a.percent.toFixed(1)} |`),
    "",
    "| function (source) | area | self ms | % busy |",
    "|---|---|---:|---:|",
    ...summary.functions.map((f) => `| ${escapeCell(f.name)} | ${f.area} | ${f.selfMs.toFixed(0)} | ${f.percent.toFixed(1)} |`),
  ];
  return lines.join("\n");
}

function escapeCell(text: string): string {
  return text.replace(/\|/g, "\\|");
}

function main(argv: readonly string[]): void {
  const [file, topArg] = argv;
  if (file === undefined) {
    process.stderr.write("usage: node dist/bench/profile-summary.js FILE.cpuprofile [top]\n");
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  process.stdout.write(`${profileMarkdown(summarizeProfile(profile, process.cwd(), { top: Number(topArg ?? "25") }))}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main(process.argv.slice(2));
}

/** Coarse buckets of areas, for the one-paragraph explanation in RESULTS.md. */
export function bucketOf(area: string): string {
  if (area === "(garbage collector)") return "garbage collection";
  if (area === "(program)" || area === "(native)" || area === "(root)") return "V8/native (program)";
  if (area.startsWith("src/") || area.startsWith("migrations/")) return "service code (src/)";
  if (area === "@grpc/grpc-js") return "grpc-js";
  if (area === "@bufbuild/protobuf") return "protobuf-es (encode/decode)";
  if (area.startsWith("node:")) return /http2|net|stream|buffer|events|timers|process|async_hooks/.test(area) ? "Node HTTP/2, net and streams" : "Node other";
  if (area === "pino" || area === "thread-stream" || area === "sonic-boom") return "logging (pino)";
  if (area === "pg" || area === "pg-protocol" || area === "kysely" || area === "@electric-sql/pglite") return "database client (pg, kysely, pglite)";
  return "other packages";
}

/** Busy time per bucket (ms) and its share of busy time (0..100), largest first. */
export function bucketShares(summary: ProfileSummary): { readonly bucket: string; readonly selfMs: number; readonly percent: number }[] {
  const shares = new Map<string, { selfMs: number; percent: number }>();
  for (const a of summary.areas) {
    const entry = shares.get(bucketOf(a.area)) ?? { selfMs: 0, percent: 0 };
    entry.selfMs += a.selfMs;
    entry.percent += a.percent;
    shares.set(bucketOf(a.area), entry);
  }
  return [...shares.entries()].sort((a, b) => b[1].selfMs - a[1].selfMs).map(([bucket, v]) => ({ bucket, ...v }));
}

/**
 * CPU µs per request by bucket, service beside the bare server: the difference is what the
 * service adds to each call. `requests` is what each process answered inside the profiled window.
 */
export function perRequestComparison(
  service: ProfileSummary,
  serviceRequests: number,
  bare: ProfileSummary,
  bareRequests: number,
): string {
  const serviceBuckets = new Map(bucketShares(service).map((b) => [b.bucket, b.selfMs]));
  const bareBuckets = new Map(bucketShares(bare).map((b) => [b.bucket, b.selfMs]));
  const buckets = [...new Set([...serviceBuckets.keys(), ...bareBuckets.keys()])].sort(
    (a, b) => (serviceBuckets.get(b) ?? 0) - (serviceBuckets.get(a) ?? 0),
  );
  const us = (ms: number | undefined, requests: number) => ((1000 * (ms ?? 0)) / Math.max(1, requests));
  const rows = buckets.map((bucket) => {
    const s = us(serviceBuckets.get(bucket), serviceRequests);
    const b = us(bareBuckets.get(bucket), bareRequests);
    return `| ${bucket} | ${s.toFixed(1)} | ${b.toFixed(1)} | ${signed(s - b)} |`;
  });
  const total = (summary: ProfileSummary, requests: number) => us(summary.busyMs, requests);
  const st = total(service, serviceRequests);
  const bt = total(bare, bareRequests);
  return [
    "| CPU per request, by area | service µs | bare µs | service − bare µs |",
    "|---|---:|---:|---:|",
    ...rows,
    `| **total busy** | **${st.toFixed(1)}** | **${bt.toFixed(1)}** | **${signed(st - bt)}** |`,
  ].join("\n");
}

/** A difference with its sign: `+1.0`, `-7.5`. */
function signed(value: number): string {
  return (value >= 0 ? "+" : "") + value.toFixed(1);
}
