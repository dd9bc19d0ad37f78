/** What the numbers were measured on, for the head of RESULTS.md. */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism, release } from "node:os";

export interface MachineInfo {
  readonly date: string;
  readonly nproc: number;
  readonly cpuModel: string;
  /** `free -m` as printed. */
  readonly memory: string;
  readonly kernel: string;
  readonly node: string;
  readonly h2load: string;
  /**
   * The code measured: `git rev-parse --short HEAD` of the repository, with a note when tracked
   * files had uncommitted changes. Absent in results written before it was recorded.
   */
  readonly commit?: string;
}

function commandOutput(command: string, args: readonly string[], cwd?: string): string {
  try {
    return execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...(cwd === undefined ? {} : { cwd }) }).trim();
  } catch {
    return `(${command} not available)`;
  }
}

/** The commit checked out in `root`, and whether tracked files differ from it. */
export function codeCommit(root: string): string {
  const head = commandOutput("git", ["rev-parse", "--short", "HEAD"], root);
  if (head.startsWith("(")) return "(not a git checkout)";
  const changes = commandOutput("git", ["status", "--porcelain", "--untracked-files=no"], root);
  return changes === "" ? head : `${head} with uncommitted changes`;
}

function cpuModel(): string {
  try {
    const match = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    return match?.[1]?.trim() ?? "(unknown)";
  } catch {
    return "(no /proc/cpuinfo)";
  }
}

/** `commit` is codeCommit() as read when the run started. */
export function machineInfo(h2load: string, now: Date, commit: string): MachineInfo {
  return {
    commit,
    date: now.toISOString(),
    nproc: availableParallelism(),
    cpuModel: cpuModel(),
    memory: commandOutput("free", ["-m"]),
    kernel: release(),
    node: process.version,
    h2load: commandOutput(h2load, ["--version"]),
  };
}

/** Whether `taskset` runs here (util-linux). */
export function hasTaskset(): boolean {
  try {
    execFileSync("taskset", ["-c", "0", "true"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Whether `h2load` (or the given path) runs. */
export function hasH2load(h2load: string): boolean {
  try {
    execFileSync(h2load, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
