/**
 * WORKERS=N (src/cluster): N workers share the HTTP and gRPC ports, connections from separate
 * clients reach different workers (checked for node:http and for grpc-js on Linux), /metrics
 * sums every worker's registry, a dead worker is restarted, and SIGTERM stops every worker
 * (each drains) and exits 0. Runs the BUILT modules (npm run build first).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import * as http from "node:http";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertBuilt, ROOT } from "../support/service.js";
import { parsePrometheusText } from "../metrics/prometheus-text.js";

const FIXTURE = join(ROOT, "test/deploy/fixtures/cluster-fixture.mjs");
const WORKERS = 2;

interface Line {
  msg?: string;
  index?: number;
  pid?: number;
  code?: number;
  httpPort?: number;
  grpcPort?: number;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

function getJson(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // agent: false: a new connection per request, as separate clients would open.
    const req = http.get({ host: "127.0.0.1", port, path, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
  });
}

function grpcWho(port: number): Promise<string> {
  // A channel of its own (no shared subchannel pool): a separate TCP connection, like another client.
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      "/test.Who/Am",
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.alloc(0),
      new grpc.Metadata(),
      { deadline: Date.now() + 5000 },
      (error, value) => {
        client.close();
        if (error) reject(error);
        else resolve(value?.toString() ?? "");
      },
    );
  });
}

describe("WORKERS=N cluster", () => {
  let child: ChildProcess;
  const lines: Line[] = [];
  let httpPort = 0;
  let grpcPort = 0;
  let exited: Promise<number | null>;

  function waitFor(predicate: (lines: Line[]) => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const started = Date.now();
      const poll = setInterval(() => {
        if (predicate(lines)) {
          clearInterval(poll);
          resolve();
        } else if (Date.now() - started > timeoutMs) {
          clearInterval(poll);
          reject(new Error(`timed out waiting for ${what}\n${JSON.stringify(lines)}`));
        }
      }, 10);
    });
  }
  const listening = () => lines.filter((l) => l.msg === "worker listening");

  beforeAll(async () => {
    assertBuilt();
    httpPort = await freePort();
    grpcPort = await freePort();
    child = spawn(process.execPath, [FIXTURE], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", WORKERS: String(WORKERS), FIXTURE_HTTP_PORT: String(httpPort), FIXTURE_GRPC_PORT: String(grpcPort) },
      stdio: ["ignore", "pipe", "inherit"],
    });
    exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    let partial = "";
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      const parts = (partial + chunk).split("\n");
      partial = parts.pop() ?? "";
      for (const part of parts) lines.push(JSON.parse(part) as Line);
    });
    await waitFor(() => listening().length === WORKERS, `${WORKERS} workers listening`);
  }, 30_000);

  afterAll(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });

  it("every worker listens on the same HTTP and gRPC ports", () => {
    expect(new Set(listening().map((l) => l.index))).toEqual(new Set([0, 1]));
    expect(listening().every((l) => l.httpPort === httpPort && l.grpcPort === grpcPort)).toBe(true);
  });

  it("HTTP connections are spread over the workers", async () => {
    const pids = new Set<number>();
    for (let i = 0; i < 20; i++) pids.add((JSON.parse((await getJson(httpPort, "/whoami")).body) as { pid: number }).pid);
    expect(pids.size).toBe(WORKERS);
  });

  it("gRPC (grpc-js) connections are spread over the workers", async () => {
    const pids = new Set<string>();
    for (let i = 0; i < 20; i++) pids.add(await grpcWho(grpcPort));
    expect(pids.size).toBe(WORKERS);
  });

  it("/metrics on any worker sums every worker's registry", async () => {
    const before = lines.length;
    const hits = 10;
    for (let i = 0; i < hits; i++) await getJson(httpPort, "/whoami");
    expect(lines.length).toBe(before);
    for (let i = 0; i < 4; i++) {
      const families = parsePrometheusText((await getJson(httpPort, "/metrics")).body);
      // 20 hits from the spreading test plus these.
      expect(families.get("licensing_fixture_hits")?.samples[0]?.value).toBe(20 + hits);
      expect(families.get("licensing_cluster_metrics_missing_workers")?.samples[0]?.value).toBe(0);
    }
  });

  it("a worker that dies is restarted with the same index", async () => {
    const victim = listening().find((l) => l.index === 1);
    process.kill(victim?.pid ?? 0, "SIGKILL");
    await waitFor(() => listening().filter((l) => l.index === 1).length === 2, "worker 1 restarted");
    expect(lines.some((l) => l.msg === "worker died: restarting" && (l as { worker?: number }).worker === 1)).toBe(true);
    const restarted = listening().filter((l) => l.index === 1).at(-1);
    expect(restarted?.pid).not.toBe(victim?.pid);
  });

  it("SIGTERM stops every worker (each drains) and the primary exits 0", async () => {
    child.kill("SIGTERM");
    const code = await exited;
    expect(code).toBe(0);
    expect(lines.filter((l) => l.msg === "worker drained").length).toBe(WORKERS);
    expect(lines.at(-1)).toMatchObject({ msg: "primary exiting", code: 0 });
  }, 15_000);
});
