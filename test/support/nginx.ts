/**
 * A real nginx (the Debian package) for tests: runs unprivileged from a temporary prefix on a
 * free 127.0.0.1 port, and an upstream that records what reaches it. Under CI (process.env.CI)
 * a missing nginx fails the tests instead of skipping them, because .ci/run installs it.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const NGINX_DIR = resolve(import.meta.dirname, "../../deploy/nginx");
const STARTUP_DEADLINE_MS = 10_000;

function nginxBinary(): string | undefined {
  for (const candidate of ["nginx", "/usr/sbin/nginx"]) {
    const probe = spawnSync(candidate, ["-v"], { stdio: "ignore" });
    if (probe.error === undefined && probe.status === 0) return candidate;
  }
  return undefined;
}

export const NGINX = nginxBinary();
/** Skip only where nginx is missing and this is not CI. */
export const SKIP_NGINX = NGINX === undefined && (process.env["CI"] === undefined || process.env["CI"] === "");

export interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
}

/** The protected service: records every request it receives and answers "app ok". */
export function startUpstream(seen: Seen[]): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    res.writeHead(200, { "content-type": "text/plain" }).end("app ok");
  });
  return new Promise((resolvePort) => server.listen(0, "127.0.0.1", () => resolvePort({ server, port: (server.address() as AddressInfo).port })));
}

/** A port that was free a moment ago (nginx binds it itself). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const port = (probe.address() as AddressInfo).port;
      probe.close(() => resolvePort(port));
    });
  });
}

/** The http{} preamble that keeps nginx's temp files inside `dir`. */
export function tempPaths(dir: string): string {
  return ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((p) => `${p}_temp_path ${dir}/${p};`).join("\n  ");
}

export interface RunningNginx {
  readonly base: string;
  readonly dir: string;
  stop(): Promise<void>;
}

/** Starts nginx with the config `conf(dir, port)` returns; resolves once it accepts connections. */
export async function startNginx(conf: (dir: string, port: number) => string): Promise<RunningNginx> {
  if (NGINX === undefined) throw new Error("nginx is required under CI (apt-get install -y nginx) but was not found");
  const dir = mkdtempSync(join(tmpdir(), "licensing-nginx-"));
  const port = await freePort();
  const file = join(dir, "nginx.conf");
  writeFileSync(file, conf(dir, port));
  let stderr = "";
  const child = spawn(NGINX, ["-p", dir, "-c", file, "-g", `daemon off; pid ${dir}/nginx.pid; error_log stderr warn;`], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  await waitForNginx(child, port, () => stderr);
  return {
    base: `http://127.0.0.1:${port}`,
    dir,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((done) => child.once("exit", done));
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function waitForNginx(child: ChildProcess, port: number, stderr: () => string): Promise<void> {
  const deadline = Date.now() + STARTUP_DEADLINE_MS;
  return new Promise((resolveReady, reject) => {
    const onExit = (code: number | null): void => reject(new Error(`nginx exited with ${code}: ${stderr()}`));
    child.once("exit", onExit);
    const attempt = (): void => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        child.off("exit", onExit);
        resolveReady();
      });
      socket.once("error", () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`nginx did not listen within ${STARTUP_DEADLINE_MS} ms: ${stderr()}`));
        else setTimeout(attempt, 20);
      });
    };
    attempt();
  });
}
