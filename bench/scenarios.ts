/**
 * The load shapes: how a mix of request bodies becomes h2load processes for one scenario.
 *
 * 16 × 32 (throughput): every body of the mix (7 allowed + 1 denied) is one h2load process
 * with 2 connections × 32 streams: 16 connections, 87.5% of them sending allowed requests.
 * 4 × 4 (latency): 3 allowed bodies, 1 connection × 4 streams each, closed loop, plus 1 denied
 * connection paced with --rps at about 10% of the scenario's throughput, so denies stay near
 * the same share without a 4th closed-loop connection making them 25%.
 */
import type { LoadPart } from "./h2load.js";
import type { ResponseKind } from "./grpc-probe.js";
import type { MixBody } from "./workload.js";

export type Shape = "16x32" | "4x4";

/** A set of bodies sent together, written to files once. */
export interface Mix {
  readonly id: string;
  readonly path: string;
  readonly response: ResponseKind;
  readonly bodies: readonly MixBody[];
  /** bodyFiles[i] holds bodies[i].frame. */
  readonly bodyFiles: readonly string[];
}

export interface Scenario {
  readonly id: string;
  readonly title: string;
  readonly mix: Mix;
  readonly shape: Shape;
}

export function loadLabel(shape: Shape): string {
  return shape === "16x32" ? "16 × 32" : "4 × 4";
}

/**
 * The h2load processes of a scenario against `ports` (the parts are spread over them in turn).
 * `pacedRps` paces the denied connection of a 4 × 4 run (requests/s); ignored for 16 × 32.
 */
export function partsFor(scenario: Scenario, ports: readonly number[], pacedRps: number): LoadPart[] {
  const { mix } = scenario;
  const entries = mix.bodies.map((body, i) => ({ body, file: mix.bodyFiles[i] ?? "" }));
  const portAt = (i: number) => ports[i % ports.length] ?? 0;
  if (scenario.shape === "16x32") {
    return entries.map(({ body, file }, i) => ({
      tag: body.label,
      bodyFile: file,
      clients: 2,
      streams: 32,
      expectAllowed: body.expectAllowed,
      port: portAt(i),
    }));
  }
  const allowed = entries.filter((e) => e.body.expectAllowed).slice(0, 3);
  const denied = entries.find((e) => !e.body.expectAllowed);
  const parts: LoadPart[] = allowed.map(({ body, file }, i) => ({
    tag: body.label,
    bodyFile: file,
    clients: 1,
    streams: 4,
    expectAllowed: true,
    port: portAt(i),
  }));
  if (denied !== undefined) {
    parts.push({
      tag: denied.body.label,
      bodyFile: denied.file,
      clients: 1,
      streams: 4,
      rps: Math.max(20, Math.round(pacedRps)),
      expectAllowed: false,
      port: portAt(parts.length),
    });
  }
  return parts;
}
