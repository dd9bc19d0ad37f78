/**
 * The bench's results and their rendering as bench/RESULTS.md (and a JSON twin).
 *
 * Every ratio is the median of per-repetition ratios, each repetition having measured the
 * service and the bare server back to back (alternating which goes first): the machine drifts
 * by ±25% between runs, so only numbers measured together are compared.
 */
import type { MachineInfo } from "./machine.js";
import type { SampledBody } from "./grpc-probe.js";
import { median, medianRatio, pairedRatios } from "./stats.js";

export interface Measurement {
  readonly reqPerSec: number;
  readonly requests: number;
  readonly failed: number;
  readonly allowedShare: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  /** Postgres round trips during the run (service on PostgreSQL behind the counting proxy). */
  readonly pgRoundTrips?: number;
}

export interface ScenarioResult {
  readonly id: string;
  readonly title: string;
  /** "16 × 32" (connections × streams per connection). */
  readonly load: string;
  readonly measure: "throughput" | "latency";
  /** One per repetition, paired index by index with `bare`. */
  readonly service: readonly Measurement[];
  readonly bare: readonly Measurement[];
}

export interface WorkersResult {
  /** "workers": WORKERS=2 honoured (node:cluster); "replicas": two service processes on one database. */
  readonly mode: "workers" | "replicas";
  readonly placement: string;
  readonly one: readonly number[];
  readonly two: readonly number[];
}

export interface StatementsResult {
  readonly method: string;
  readonly allowedChecks: number;
  /** Licences (one key each) the Checks were spread over. */
  readonly licences: number;
  readonly loadSeconds: number;
  readonly roundTrips: number;
  /** Round trips in an idle window of the same length just before (heartbeats, flush timers). */
  readonly idleRoundTrips: number;
  readonly xactCommits: number | undefined;
}

export interface ExtraResult {
  readonly title: string;
  readonly figure: string;
  readonly detail: string;
}

export interface Skipped {
  readonly title: string;
  readonly reason: string;
}

export type TargetStatus = "PASS" | "MISS" | "NOT MEASURED";

export interface TargetResult {
  readonly target: string;
  readonly measured: string;
  readonly status: TargetStatus;
}

export interface BenchResults {
  readonly machine: MachineInfo;
  readonly mode: "full" | "smoke";
  readonly database: string;
  readonly placement: string;
  readonly repetitions: number;
  readonly bound: string;
  readonly workload: string;
  /** The Node flags both servers ran under (the service's production flags); absent in older runs: none. */
  readonly nodeFlags?: string;
  readonly scenarios: readonly ScenarioResult[];
  readonly workers: WorkersResult | undefined;
  readonly statements: StatementsResult | undefined;
  readonly extras: readonly ExtraResult[];
  readonly skipped: readonly Skipped[];
  readonly samples: readonly { readonly mix: string; readonly bodies: readonly SampledBody[] }[];
  /** Markdown tables of the profile summary. */
  readonly profile: string | undefined;
  /** The explanation above them (or why there is no profile). */
  readonly profileNote: string;
  /** The same for the ext_authz mix, when profiled. */
  readonly extAuthzProfile?: string | undefined;
  readonly extAuthzProfileNote?: string | undefined;
  readonly commands: readonly string[];
  readonly elapsedSeconds: number;
}

/** Medians and paired ratios of one scenario. */
export interface ScenarioSummary {
  readonly serviceReqPerSec: number;
  readonly bareReqPerSec: number;
  /** service / bare throughput: the median of the per-repetition ratios. */
  readonly throughputRatio: number;
  /** The smallest and largest per-repetition throughput ratio: how much the machine varied. */
  readonly throughputRatioRange: readonly [number, number];
  readonly serviceP50Ms: number;
  readonly serviceP99Ms: number;
  readonly bareP50Ms: number;
  readonly bareP99Ms: number;
  /** service p99 / bare p99. */
  readonly p99Ratio: number;
  readonly allowedShare: number;
  /** Postgres round trips per 1,000 requests, when counted. */
  readonly pgPerThousand: number | undefined;
}

function rangeOf(xs: readonly number[]): readonly [number, number] {
  return xs.length === 0 ? [Number.NaN, Number.NaN] : [Math.min(...xs), Math.max(...xs)];
}

function values(ms: readonly Measurement[], pick: (m: Measurement) => number | undefined): number[] {
  return ms.map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v));
}

export function summarizeScenario(s: ScenarioResult): ScenarioSummary {
  const trips = values(s.service, (m) => (m.pgRoundTrips === undefined || m.requests === 0 ? undefined : (1000 * m.pgRoundTrips) / m.requests));
  return {
    serviceReqPerSec: median(values(s.service, (m) => m.reqPerSec)),
    bareReqPerSec: median(values(s.bare, (m) => m.reqPerSec)),
    throughputRatio: medianRatio(values(s.service, (m) => m.reqPerSec), values(s.bare, (m) => m.reqPerSec)),
    throughputRatioRange: rangeOf(pairedRatios(values(s.service, (m) => m.reqPerSec), values(s.bare, (m) => m.reqPerSec))),
    serviceP50Ms: median(values(s.service, (m) => m.p50Ms)),
    serviceP99Ms: median(values(s.service, (m) => m.p99Ms)),
    bareP50Ms: median(values(s.bare, (m) => m.p50Ms)),
    bareP99Ms: median(values(s.bare, (m) => m.p99Ms)),
    p99Ratio: medianRatio(values(s.service, (m) => m.p99Ms), values(s.bare, (m) => m.p99Ms)),
    allowedShare: median(values(s.service, (m) => m.allowedShare)),
    pgPerThousand: trips.length === 0 ? undefined : median(trips),
  };
}

const TARGETS = {
  checkThroughput: 0.85,
  checkP99: 1.5,
  extAuthz: 0.8,
  workers: 1.4,
  reportEventsPerSec: 20_000,
  pgPerThousand: 5,
} as const;

function verdict(ok: boolean | undefined): TargetStatus {
  return ok === undefined ? "NOT MEASURED" : ok ? "PASS" : "MISS";
}

/** The issue's targets, each PASS, MISS or NOT MEASURED (with why). */
export function evaluateTargets(r: BenchResults): TargetResult[] {
  const byId = new Map(r.scenarios.map((s) => [s.id, summarizeScenario(s)]));
  const targets: TargetResult[] = [];
  for (const kind of ["boolean", "quota", "rate"]) {
    const t = byId.get(`check-${kind}-16x32`);
    targets.push({
      target: `Check ${kind} throughput ≥ ${TARGETS.checkThroughput} × bare (16 × 32)`,
      measured: t === undefined ? "not run" : `${fmtAgainst(t.throughputRatio, TARGETS.checkThroughput)} (${fmtRate(t.serviceReqPerSec)} vs ${fmtRate(t.bareReqPerSec)} req/s)`,
      status: verdict(t === undefined ? undefined : t.throughputRatio >= TARGETS.checkThroughput),
    });
  }
  for (const kind of ["boolean", "quota", "rate"]) {
    const l = byId.get(`check-${kind}-4x4`);
    targets.push({
      target: `Check ${kind} p99 ≤ ${TARGETS.checkP99} × bare's (4 × 4)`,
      measured: l === undefined ? "not run" : `${fmtAgainst(l.p99Ratio, TARGETS.checkP99)} (${fmtMs(l.serviceP99Ms)} vs ${fmtMs(l.bareP99Ms)} ms)`,
      status: verdict(l === undefined ? undefined : l.p99Ratio <= TARGETS.checkP99),
    });
  }
  const e = byId.get("ext-authz-16x32");
  targets.push({
    target: `ext_authz throughput ≥ ${TARGETS.extAuthz} × bare`,
    measured: e === undefined ? "not run" : `${fmtAgainst(e.throughputRatio, TARGETS.extAuthz)} (${fmtRate(e.serviceReqPerSec)} vs ${fmtRate(e.bareReqPerSec)} req/s)`,
    status: verdict(e === undefined ? undefined : e.throughputRatio >= TARGETS.extAuthz),
  });
  const w = r.workers;
  const workersRatio = w === undefined ? undefined : medianRatio(w.two, w.one);
  targets.push({
    target: `2 workers ≥ ${TARGETS.workers} × 1 worker`,
    measured:
      w === undefined || workersRatio === undefined
        ? skippedReason(r, "workers")
        : `${fmtAgainst(workersRatio, TARGETS.workers)} (${w.mode === "replicas" ? "2 replica processes, WORKERS not honoured" : "WORKERS=2"}: ${fmtRate(median([...w.two]))} vs ${fmtRate(median([...w.one]))} req/s)`,
    status: verdict(workersRatio === undefined ? undefined : workersRatio >= TARGETS.workers),
  });
  const report = r.extras.find((x) => x.title.startsWith("Report"));
  const reportRate = report === undefined ? undefined : Number(/([\d.]+) events\/s/.exec(report.figure.replace(/,/g, ""))?.[1]);
  targets.push({
    target: `Report ≥ ${TARGETS.reportEventsPerSec.toLocaleString("en-US")} events/s durable`,
    measured: report === undefined ? skippedReason(r, "Report") : report.figure,
    status: verdict(reportRate === undefined || !Number.isFinite(reportRate) ? undefined : reportRate >= TARGETS.reportEventsPerSec),
  });
  const s = r.statements;
  const perThousand = s === undefined || s.allowedChecks === 0 ? undefined : (1000 * s.roundTrips) / s.allowedChecks;
  targets.push({
    target: `≤ ${TARGETS.pgPerThousand} Postgres round trips per 1,000 allowed quota Checks`,
    measured: perThousand === undefined ? skippedReason(r, "Postgres") : `${perThousand.toFixed(2)} (${s?.roundTrips} round trips for ${s?.allowedChecks} allowed Checks, background included)`,
    status: verdict(perThousand === undefined ? undefined : perThousand <= TARGETS.pgPerThousand),
  });
  return targets;
}

function skippedReason(r: BenchResults, prefix: string): string {
  const skipped = r.skipped.find((x) => x.title.startsWith(prefix));
  return skipped === undefined ? "not run" : `skipped: ${skipped.reason}`;
}

export function fmtRate(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–";
}

export function fmtMs(n: number): string {
  return Number.isFinite(n) ? (n < 10 ? n.toFixed(2) : n.toFixed(1)) : "–";
}

function fmtRange([low, high]: readonly [number, number]): string {
  return Number.isFinite(low) && Number.isFinite(high) ? `${low.toFixed(2)}–${high.toFixed(2)}×` : "–";
}

export function fmtRatio(n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(2)}×` : "–";
}

/** A ratio next to its target: a third decimal where two would round it onto the threshold. */
function fmtAgainst(n: number, target: number): string {
  return Number.isFinite(n) && n !== target && Number(n.toFixed(2)) === target ? `${n.toFixed(3)}×` : fmtRatio(n);
}

/** The scenario table (also what the smoke test reads back). */
export function scenarioTable(scenarios: readonly ScenarioResult[]): string {
  const header = [
    "| scenario | load (conns × streams) | service req/s | bare req/s | throughput ratio | service p50 ms | service p99 ms | bare p50 ms | bare p99 ms | p99 ratio | allowed | PG round trips / 1k | throughput ratio per repetition, min–max |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  const rows = scenarios.map((s) => {
    const m = summarizeScenario(s);
    const latency = s.measure === "latency" || Number.isFinite(m.serviceP99Ms);
    return `| ${s.title} | ${s.load} | ${fmtRate(m.serviceReqPerSec)} | ${fmtRate(m.bareReqPerSec)} | ${fmtRatio(m.throughputRatio)} | ${latency ? fmtMs(m.serviceP50Ms) : "–"} | ${latency ? fmtMs(m.serviceP99Ms) : "–"} | ${latency ? fmtMs(m.bareP50Ms) : "–"} | ${latency ? fmtMs(m.bareP99Ms) : "–"} | ${latency ? fmtRatio(m.p99Ratio) : "–"} | ${(100 * m.allowedShare).toFixed(1)}% | ${m.pgPerThousand === undefined ? "–" : m.pgPerThousand.toFixed(2)} | ${fmtRange(m.throughputRatioRange)} |`;
  });
  return [...header, ...rows].join("\n");
}

export function renderResults(r: BenchResults): string {
  const m = r.machine;
  const targets = evaluateTargets(r);
  const out: string[] = [];
  out.push(
    "# Benchmark results",
    "",
    `Written by \`npm run bench\`${r.mode === "smoke" ? " (smoke mode: tiny runs, numbers meaningless)" : ""}; do not edit by hand. ` +
      "Only ratios mean anything: this machine varies about ±25% from run to run, so every ratio below compares figures measured back to back in the same run.",
    "",
    "## Machine",
    "",
    `- date: ${m.date}`,
    ...(m.commit === undefined ? [] : [`- code: ${m.commit}`]),
    `- CPU: ${m.cpuModel}, nproc ${m.nproc}`,
    `- kernel ${m.kernel}, Node ${m.node}, ${m.h2load}`,
    `- database: ${r.database}`,
    `- placement: ${r.placement}`,
    `- whole bench took ${Math.round(r.elapsedSeconds)} s`,
    "",
    "```",
    m.memory,
    "```",
    "",
    "## How it was measured",
    "",
    `- ${r.workload}`,
    `- Each scenario ran ${r.repetitions} time(s) per variant (${r.bound}), alternating service and bare server (odd repetitions service first, even ones bare first). Figures are medians; ratios are medians of the per-repetition ratios, and the scenario table's last column shows how far those spread.`,
    "- h2load sends one body per process, so a mix is several h2load processes started together (one pre-encoded gRPC frame each) sharing the connections; their req/s are summed and their per-request logs pooled for p50/p99.",
    "- 16 × 32 (throughput): 8 h2load processes × 2 connections × 32 streams: 7 allowed bodies on 7 keys of 7 licences and 1 denied (FEATURE_NOT_ENTITLED), 87.5% allowed by connection share. 4 × 4 (latency): 3 allowed processes × 1 connection × 4 streams, closed loop, and 1 denied connection paced (--rps) at about 10% of the scenario's throughput.",
    "- The bare server (bench/bare-server.ts) is @grpc/grpc-js with the service's transport settings and raw-bytes method definitions, answering a constant pre-encoded CheckResponse (or Envoy CheckResponse), shaped like the service's allowed answer so both send about as many bytes, on the same method path. The service answers both Checks on its fast lane (src/server/unary-fast-lane.ts: straight on node:http2, every other call handed to grpc-js), so it does not pay grpc-js's per-call cost for them; the bare server does.",
    "- Service defaults throughout (decision log on, DECISION_LOG=denies), LOG_LEVEL=warn, DEMO_SEED=off.",
    r.nodeFlags === undefined || r.nodeFlags === ""
      ? "- Both servers ran with Node's default flags."
      : `- Both servers ran under the service's production Node flags, \`${r.nodeFlags}\` (package.json \`config.nodeFlags\`, as \`npm start\` and the Dockerfile pass them).`,
    "",
    "## Scenarios",
    "",
    scenarioTable(r.scenarios),
    "",
    "## Targets",
    "",
    "| target | measured | status |",
    "|---|---|---|",
    ...targets.map((t) => `| ${t.target} | ${t.measured} | ${t.status} |`),
    "",
  );
  if (r.workers !== undefined) {
    const w = r.workers;
    out.push(
      "## 1 and 2 workers",
      "",
      `- mode: ${w.mode === "workers" ? "WORKERS=2 (node:cluster) against the default single process" : "WORKERS is not honoured by this build: the 2-worker variant is 2 service processes (2 replicas) on 2 ports sharing one PostgreSQL database, the load split evenly between them"}`,
      `- placement: ${w.placement}`,
      `- 1: ${w.one.map(fmtRate).join(", ")} req/s (median ${fmtRate(median([...w.one]))})`,
      `- 2: ${w.two.map(fmtRate).join(", ")} req/s (median ${fmtRate(median([...w.two]))}); paired ratio ${fmtRatio(medianRatio(w.two, w.one))}`,
      "",
    );
  }
  if (r.statements !== undefined) {
    const s = r.statements;
    out.push(
      "## Postgres round trips per 1,000 allowed quota Checks",
      "",
      `- method: ${s.method}`,
      `- ${s.allowedChecks.toLocaleString("en-US")} allowed quota Checks (${s.licences} licences, 2 connections × 32 streams each) in ${s.loadSeconds.toFixed(1)} s, plus the settle interval after: ${s.roundTrips} round trips = ${((1000 * s.roundTrips) / Math.max(1, s.allowedChecks)).toFixed(2)} per 1,000 (background work included)`,
      `- idle window of the same length just before: ${s.idleRoundTrips} round trips (heartbeats, timers); net of it: ${((1000 * Math.max(0, s.roundTrips - s.idleRoundTrips)) / Math.max(1, s.allowedChecks)).toFixed(2)} per 1,000`,
      `- cross-check, pg_stat_database.xact_commit delta on the bench database: ${s.xactCommits ?? "not read"} transactions`,
      "",
    );
  }
  if (r.extras.length > 0) {
    out.push("## Other scenarios", "", "| scenario | figure | detail |", "|---|---|---|", ...r.extras.map((x) => `| ${x.title} | ${x.figure} | ${x.detail} |`), "");
  }
  if (r.skipped.length > 0) {
    out.push("## Skipped (no numbers rather than made-up ones)", "", ...r.skipped.map((s) => `- ${s.title}: ${s.reason}`), "");
  }
  out.push("## Where the time goes", "", r.profileNote, "");
  if (r.profile !== undefined) out.push(r.profile, "");
  if (r.extAuthzProfileNote !== undefined) {
    out.push("## Where the ext_authz time goes", "", r.extAuthzProfileNote, "");
    if (r.extAuthzProfile !== undefined) out.push(r.extAuthzProfile, "");
  }
  out.push("## Mix verification", "", "Each body of each mix was sent once through a gRPC client before the load (h2load sees only HTTP 200); every call returned grpc-status OK:", "");
  for (const sample of r.samples) {
    const allowed = sample.bodies.filter((b) => b.allowed).length;
    const wrong = sample.bodies.filter((b) => b.allowed !== b.expectAllowed);
    out.push(
      `- ${sample.mix}: ${allowed}/${sample.bodies.length} bodies allowed (${[...new Set(sample.bodies.map((b) => b.answer))].join(", ")})${wrong.length === 0 ? ", as intended" : `; UNEXPECTED: ${wrong.map((b) => b.label).join(", ")}`}`,
    );
  }
  out.push("", "## Commands", "", "```", ...r.commands, "```", "");
  return out.join("\n");
}
