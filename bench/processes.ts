/**
 * The processes under test: the built service (`node dist/src/cli/main.js serve`) and the bare
 * reference server (`node dist/bench/bare-server.js`), each optionally pinned to CPUs with
 * taskset, on ports chosen here (the service logs at warn, so it never says which port it got).
 * Both run under the service's production Node flags (package.json `config.nodeFlags`, what
 * `npm start` and the Dockerfile pass), so the flags are not what differs between them.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ProbeClient } from "./grpc-probe.js";

/** The Node flags the service runs under in production: package.json's `config.nodeFlags`. */
export function productionNodeFlags(root: string): string[] {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { config?: { nodeFlags?: unknown } };
  const flags = pkg.config?.nodeFlags;
  if (typeof flags !== "string") throw new Error(`${join(root, "package.json")}: config.nodeFlags must be a string of Node flags`);
  return flags.split(/\s+/).filter((flag) => flag !== "");
}

export interface ServerProcess {
  readonly name: string;
  readonly pid: number;
  readonly grpcPort: number;
  readonly process: ChildProcess;
  /** Everything the process wrote so far (for failure messages). */
  output(): string;
  /** SIGTERM, then SIGKILL after timeoutMs; resolves the exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
}

/**
 * The repository holding `dir`: the nearest ancestor with a package.json (dist/ has none), so
 * the bench finds dist/src/cli/main.js whichever directory it was compiled into.
 */
export function repositoryRoot(dir: string): string {
  for (let current = dir; ; current = dirname(current)) {
    if (existsSync(join(current, "package.json"))) return current;
    if (dirname(current) === current) throw new Error(`no package.json above ${dir}`);
  }
}

/** A port that was free a moment ago (bind 0, read, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface SpawnOptions {
  readonly name: string;
  /** CPU list for taskset ("1", "0,1"); absent: not pinned. */
  readonly cpus?: string;
  readonly nodeArgs?: readonly string[];
  readonly script: string;
  readonly args?: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly cwd: string;
}

function spawnNode(options: SpawnOptions): { child: ChildProcess; output: () => string } {
  const argv = [...(options.nodeArgs ?? []), options.script, ...(options.args ?? [])];
  const child =
    options.cpus === undefined
      ? spawn(process.execPath, argv, { env: options.env, cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"] })
      : // taskset execs node in place: the pid is node's, so signals reach it.
        spawn("taskset", ["-c", options.cpus, process.execPath, ...argv], { env: options.env, cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  // Keep only the tail: a long run must not grow this without bound.
  const append = (chunk: string) => {
    output = (output + chunk).slice(-20_000);
  };
  child.stdout?.setEncoding("utf8").on("data", append);
  child.stderr?.setEncoding("utf8").on("data", append);
  return { child, output: () => output };
}

function stopper(child: ChildProcess): (timeoutMs?: number) => Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    else child.once("exit", (code) => resolve(code));
  });
  return async (timeoutMs = 20_000) => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
}

/** Polls health until SERVING; rejects with the process output on exit or timeout. */
async function waitServing(name: string, child: ChildProcess, port: number, output: () => string, timeoutMs: number): Promise<void> {
  const client = new ProbeClient(port);
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before serving:\n${output()}`);
      }
      if (await client.serving()) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    child.kill("SIGKILL");
    throw new Error(`${name} was not SERVING within ${timeoutMs} ms:\n${output()}`);
  } finally {
    client.close();
  }
}

export interface ServiceOptions {
  readonly name: string;
  readonly root: string;
  readonly cpus?: string;
  readonly nodeArgs?: readonly string[];
  /** Service environment beyond the bench defaults (DATABASE_URL, DATA_DIR, ADMIN_TOKEN, WORKERS...). */
  readonly env: Readonly<Record<string, string>>;
  readonly startTimeoutMs: number;
}

/** Starts `licensing serve` on free ports and waits until health says SERVING. */
export async function startService(options: ServiceOptions): Promise<ServerProcess & { readonly httpPort: number }> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const env = {
    PATH: process.env.PATH ?? "",
    HOST: "127.0.0.1",
    GRPC_PORT: String(grpcPort),
    HTTP_PORT: String(httpPort),
    DEMO_SEED: "off",
    LOG_LEVEL: "warn",
    LOG_PRETTY: "false",
    SHUTDOWN_GRACE_MS: "5000",
    ...options.env,
  };
  const spawned = spawnNode({
    name: options.name,
    script: join(options.root, "dist/src/cli/main.js"),
    args: ["serve"],
    env,
    cwd: options.root,
    ...(options.cpus === undefined ? {} : { cpus: options.cpus }),
    nodeArgs: [...productionNodeFlags(options.root), ...(options.nodeArgs ?? [])],
  });
  const pid = spawned.child.pid ?? -1;
  await waitServing(options.name, spawned.child, grpcPort, spawned.output, options.startTimeoutMs);
  return { name: options.name, pid, grpcPort, httpPort, process: spawned.child, output: spawned.output, stop: stopper(spawned.child) };
}

/** Starts the bare reference server (bench/bare-server.ts) and waits for its port. */
export async function startBare(options: {
  readonly root: string;
  readonly cpus?: string;
  readonly nodeArgs?: readonly string[];
  readonly startTimeoutMs: number;
}): Promise<ServerProcess> {
  const port = await freePort();
  const spawned = spawnNode({
    name: "bare",
    // Next to this module, wherever the bench was compiled to.
    script: fileURLToPath(new URL("./bare-server.js", import.meta.url)),
    args: [String(port)],
    env: { PATH: process.env.PATH ?? "" },
    cwd: options.root,
    ...(options.cpus === undefined ? {} : { cpus: options.cpus }),
    nodeArgs: [...productionNodeFlags(options.root), ...(options.nodeArgs ?? [])],
  });
  const deadline = Date.now() + options.startTimeoutMs;
  while (!spawned.output().includes('"bare":"listening"')) {
    if (spawned.child.exitCode !== null) throw new Error(`bare server exited (${spawned.child.exitCode}):\n${spawned.output()}`);
    if (Date.now() > deadline) {
      spawned.child.kill("SIGKILL");
      throw new Error(`bare server did not listen within ${options.startTimeoutMs} ms:\n${spawned.output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { name: "bare", pid: spawned.child.pid ?? -1, grpcPort: port, process: spawned.child, output: spawned.output, stop: stopper(spawned.child) };
}

/** Direct children of `pid` (Linux /proc), e.g. node:cluster workers. Empty elsewhere. */
export async function childPids(pid: number): Promise<number[]> {
  const children: number[] = [];
  let entries: string[];
  try {
    entries = await readdir("/proc");
  } catch {
    return children; // not Linux: worker detection reports none
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      // Field 4 is the parent pid; the command name (field 2) may hold spaces, so split after ")".
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === pid) children.push(Number(entry));
    } catch {
      // The process ended while we looked: not a child any more.
    }
  }
  return children;
}

/** Summed user+system CPU seconds of `pids` so far (Linux /proc; 0 elsewhere). */
export async function cpuSeconds(pids: readonly number[]): Promise<number> {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = await readFile(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // Gone: counts nothing.
    }
  }
  return ticks / 100; // USER_HZ is 100 on Linux
}
