/**
 * Runs the built service (dist/, made by `npm test`'s pretest build) as a child process on free
 * ports, as an operator would, and the CLI against it.
 *
 * Ports are 0 (the OS picks free ones); the service's own "listening" log line says which, so
 * tests never race for a port. Every wait is bounded and fails with the output collected so far.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dirname, "../..");
export const CLI = join(ROOT, "dist/src/cli/main.js");

export interface RunningService {
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly dataDir: string;
  readonly grpcUrl: string;
  readonly httpUrl: string;
  readonly process: ChildProcess;
  /** Every stdout line so far (NDJSON log lines). */
  readonly stdout: string[];
  readonly stderr: () => string;
  /** Sends the signal and resolves the exit code (bounded by timeoutMs). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

export interface StartOptions {
  readonly env?: Record<string, string>;
  /** Reuse a data directory (default: a new temporary one). */
  readonly dataDir?: string;
  readonly timeoutMs?: number;
}

export async function makeDataDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "licensing-e2e-"));
}

export async function removeDataDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" (npm test does it first)`);
}

export async function startService(options: StartOptions = {}): Promise<RunningService> {
  assertBuilt();
  const dataDir = options.dataDir ?? (await makeDataDir());
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOST: "127.0.0.1",
    GRPC_PORT: "0",
    HTTP_PORT: "0",
    DATA_DIR: dataDir,
    LOG_LEVEL: "info",
    LOG_PRETTY: "false",
    SHUTDOWN_GRACE_MS: "2000",
    ...options.env,
  };
  const child = spawn(process.execPath, [CLI, "serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
  const stdout: string[] = [];
  let stderr = "";
  let partial = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolveExit) => child.once("exit", (code) => resolveExit(code)));

  const ports = await new Promise<{ grpcPort: number; httpPort: number }>((resolvePorts, reject) => {
    let listening: { grpcPort: number; httpPort: number } | undefined;
    const timer = setTimeout(
      () => reject(new Error(`service did not start within ${options.timeoutMs ?? 30_000} ms\n${stdout.join("\n")}\n${stderr}`)),
      options.timeoutMs ?? 30_000,
    );
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        stdout.push(line);
        const entry = parseJson(line);
        if (entry?.grpcPort !== undefined && entry.httpPort !== undefined) {
          listening = { grpcPort: Number(entry.grpcPort), httpPort: Number(entry.httpPort) };
        }
        if (entry?.msg === "serving" && listening !== undefined) {
          clearTimeout(timer);
          resolvePorts(listening);
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`service exited with ${code} before serving\n${stdout.join("\n")}\n${stderr}`));
    });
  });

  return {
    ...ports,
    dataDir,
    grpcUrl: `http://127.0.0.1:${ports.grpcPort}`,
    httpUrl: `http://127.0.0.1:${ports.httpPort}`,
    process: child,
    stdout,
    stderr: () => stderr,
    async stop(signal = "SIGTERM", timeoutMs = 15_000) {
      if (child.exitCode !== null) return child.exitCode;
      child.kill(signal);
      const timeout = new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`service did not exit within ${timeoutMs} ms of ${signal}`)), timeoutMs).unref(),
      );
      return Promise.race([exited, timeout]);
    },
  };
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `licensing <args>` to completion (bounded by timeoutMs). */
export function runCli(args: string[], options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  assertBuilt();
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { PATH: process.env.PATH ?? "", ...options.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`licensing ${args.join(" ")} did not finish\n${stdout}\n${stderr}`));
    }, options.timeoutMs ?? 20_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolveRun({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? "");
  });
}

function parseJson(line: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
