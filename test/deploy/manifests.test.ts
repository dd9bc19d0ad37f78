/**
 * The container and Kubernetes files, checked against the repository so they cannot rot (CI
 * has no Docker engine or cluster): the image is multi-stage, runs as a numeric non-root user
 * with a read-only root filesystem writing only DATA_DIR, starts a file the build produces and
 * copies what the runtime reads; the manifests' probes point at routes and ports the service
 * serves, every environment variable they set is one the service reads, and selectors match.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { ROOT } from "../support/service.js";

interface Instruction {
  readonly op: string;
  readonly args: string;
  readonly stage: number;
}

/** Dockerfile instructions, with continuation lines joined and comments dropped. */
function dockerfile(): Instruction[] {
  const text = readFileSync(join(ROOT, "Dockerfile"), "utf8");
  const logical = text
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("#"))
    .join("\n")
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
  let stage = -1;
  return logical.map((line) => {
    const [op = "", ...rest] = line.split(/\s+/);
    if (op.toUpperCase() === "FROM") stage += 1;
    return { op: op.toUpperCase(), args: rest.join(" "), stage };
  });
}

const instructions = dockerfile();
const stages = Math.max(...instructions.map((i) => i.stage)) + 1;
const runtime = instructions.filter((i) => i.stage === stages - 1);
const runtimeEnv = new Map(
  runtime
    .filter((i) => i.op === "ENV")
    .flatMap((i) => i.args.split(/\s+/).map((pair) => pair.split("=") as [string, string])),
);
const dockerignore = readFileSync(join(ROOT, ".dockerignore"), "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l !== "" && !l.startsWith("#"));
const configSource = readFileSync(join(ROOT, "src/config.ts"), "utf8");
/** Where the HTTP probe routes are defined (app.ts today; the readiness module once wired). */
const appSource = ["src/app.ts", "src/metrics/readiness.ts"].map((file) => readFileSync(join(ROOT, file), "utf8")).join("\n");

type Manifest = Record<string, unknown> & { kind: string; metadata: { name: string }; spec: Record<string, unknown> };

function manifests(file: string): Manifest[] {
  return parseAllDocuments(readFileSync(join(ROOT, "deploy/kubernetes", file), "utf8")).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join("; ")}`);
    return doc.toJS() as Manifest;
  });
}

function only(file: string, kind: string): Manifest {
  const found = manifests(file).filter((m) => m.kind === kind);
  expect(found, `${file} has one ${kind}`).toHaveLength(1);
  return found[0] as Manifest;
}

interface Container {
  name: string;
  args?: string[];
  ports?: { name: string; containerPort: number }[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } } }[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: Record<string, unknown> & { capabilities?: { drop?: string[] } };
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
  volumeMounts?: { name: string; mountPath: string }[];
}
interface Probe {
  httpGet?: { path: string; port: string | number };
  grpc?: { port: number };
}

const deployment = only("deployment.yaml", "Deployment");
const podSpec = (deployment.spec.template as { spec: Record<string, unknown> }).spec as {
  securityContext: Record<string, unknown>;
  containers: Container[];
  volumes: { name: string; emptyDir?: unknown }[];
  terminationGracePeriodSeconds: number;
};
const container = podSpec.containers[0] as Container;
const podLabels = (deployment.spec.template as { metadata: { labels: Record<string, string> } }).metadata.labels;

function portNumber(port: string | number): number {
  if (typeof port === "number") return port;
  const named = container.ports?.find((p) => p.name === port);
  if (named === undefined) throw new Error(`no container port named ${port}`);
  return named.containerPort;
}

function selects(selector: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => podLabels[k] === v);
}

describe("Dockerfile", () => {
  it("is multi-stage: the runtime stage installs nothing and takes built files from the build stage", () => {
    expect(stages).toBeGreaterThanOrEqual(2);
    expect(instructions.some((i) => i.stage === 0 && i.op === "RUN" && i.args.includes("npm ci"))).toBe(true);
    expect(instructions.some((i) => i.stage === 0 && i.op === "RUN" && i.args.includes("npm prune --omit=dev"))).toBe(true);
    expect(runtime.some((i) => i.op === "RUN" && /npm (ci|install)/.test(i.args))).toBe(false);
    expect(runtime.filter((i) => i.op === "COPY" && i.args.startsWith("--from=build")).map((i) => i.args.split(/\s+/)[1])).toEqual(
      expect.arrayContaining(["/app/package.json", "/app/node_modules", "/app/dist"]),
    );
  });

  it("runs as a numeric non-root user, set before the entrypoint", () => {
    const users = runtime.filter((i) => i.op === "USER");
    expect(users).toHaveLength(1);
    const [uid, gid] = (users[0]?.args ?? "").split(":");
    expect(uid).toMatch(/^\d+$/);
    expect(Number(uid)).toBeGreaterThan(0);
    expect(Number(gid ?? uid)).toBeGreaterThan(0);
    expect(runtime.findIndex((i) => i.op === "USER")).toBeLessThan(runtime.findIndex((i) => i.op === "ENTRYPOINT"));
    // The manifests run as the same user.
    expect(podSpec.securityContext.runAsUser).toBe(Number(uid));
  });

  it("writes only DATA_DIR: it exists, belongs to the runtime user and is a volume", () => {
    const dataDir = runtimeEnv.get("DATA_DIR");
    expect(dataDir).toBe("/data");
    const uid = (runtime.find((i) => i.op === "USER")?.args ?? "").split(":")[0];
    expect(runtime.some((i) => i.op === "RUN" && i.args.includes(`mkdir -p ${dataDir}`) && i.args.includes(`chown ${uid}`))).toBe(true);
    expect(runtime.find((i) => i.op === "VOLUME")?.args).toContain(dataDir);
  });

  it("starts a file the build produces from the source tree, with the package.json that makes it ESM, under the Node flags npm start uses", () => {
    const entrypoint = JSON.parse(runtime.find((i) => i.op === "ENTRYPOINT")?.args ?? "[]") as string[];
    expect(entrypoint[0]).toBe("node");
    // The Node flags are package.json's config.nodeFlags, as `npm start` and the bench pass them.
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { config: { nodeFlags: string }; scripts: { start: string } };
    const flags = pkg.config.nodeFlags.split(/\s+/).filter((f) => f !== "");
    expect(flags.length).toBeGreaterThan(0);
    expect(entrypoint.slice(1, 1 + flags.length)).toEqual(flags);
    expect(pkg.scripts.start).toContain("node $npm_package_config_nodeFlags dist/src/cli/main.js serve");
    const file = entrypoint[1 + flags.length] ?? "";
    expect(file).toBe("dist/src/cli/main.js");
    // tsc maps src/X.ts to dist/src/X.js (rootDir ".", outDir "dist").
    expect(existsSync(join(ROOT, file.replace(/^dist\//, "").replace(/\.js$/, ".ts")))).toBe(true);
    const tsconfig = JSON.parse(readFileSync(join(ROOT, "tsconfig.json"), "utf8")) as { compilerOptions: { outDir: string; rootDir: string } };
    expect([tsconfig.compilerOptions.outDir, tsconfig.compilerOptions.rootDir]).toEqual(["dist", "."]);
    expect((JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { type: string }).type).toBe("module");
    expect(JSON.parse(runtime.find((i) => i.op === "CMD")?.args ?? "[]")).toEqual(["serve"]);
  });

  it("copies what the runtime reads (the demo rules in examples/, schemas/) and the build's inputs, none of them ignored", () => {
    const fromContext = instructions.filter((i) => i.op === "COPY" && !i.args.startsWith("--from")).flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    expect(fromContext).toEqual(expect.arrayContaining(["package.json", "package-lock.json", "src", "migrations", "examples", "schemas"]));
    for (const source of fromContext) {
      expect(existsSync(join(ROOT, source)), source).toBe(true);
      expect(dockerignore.includes(source), `${source} is in .dockerignore`).toBe(false);
    }
    expect(existsSync(join(ROOT, "examples/demo.yaml"))).toBe(true);
  });

  it(".dockerignore keeps local state, secrets and build output out of the context", () => {
    expect(dockerignore).toEqual(expect.arrayContaining(["node_modules", "dist", ".data", ".git", "test", "**/admin-token", "**/signing-secret"]));
  });

  it("exposes the ports the service listens on by default and health-checks a real route", () => {
    expect(runtime.find((i) => i.op === "EXPOSE")?.args.split(/\s+/).sort()).toEqual([runtimeEnv.get("GRPC_PORT"), runtimeEnv.get("HTTP_PORT")].sort());
    expect(configSource).toMatch(/"GRPC_PORT", 50051/);
    expect(configSource).toMatch(/"HTTP_PORT", 8080/);
    const healthcheck = runtime.find((i) => i.op === "HEALTHCHECK")?.args ?? "";
    const path = /\/(healthz|readyz)/.exec(healthcheck)?.[0];
    expect(path).toBeDefined();
    expect(appSource).toContain(`path: "${path}"`);
    expect(runtimeEnv.get("HOST")).toBe("0.0.0.0");
  });
});

describe("deploy/kubernetes", () => {
  it("every file parses and names its kind", () => {
    for (const file of ["deployment.yaml", "service.yaml", "pdb.yaml", "hpa.yaml", "secret.example.yaml", "migrate-job.yaml", "kustomization.yaml"]) {
      expect(manifests(file).every((m) => typeof m.kind === "string"), file).toBe(true);
    }
    const kustomization = only("kustomization.yaml", "Kustomization") as unknown as { resources: string[] };
    for (const resource of kustomization.resources) expect(existsSync(join(ROOT, "deploy/kubernetes", resource)), resource).toBe(true);
  });

  it("runs several replicas, non-root, read-only root filesystem, no privilege escalation, all capabilities dropped", () => {
    expect(deployment.spec.replicas).toBeGreaterThanOrEqual(3);
    expect(podSpec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } });
    expect(container.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, runAsNonRoot: true });
    expect(container.securityContext?.capabilities?.drop).toEqual(["ALL"]);
    expect(container.resources?.requests?.cpu).toBeDefined();
    expect(container.resources?.requests?.memory).toBeDefined();
    expect(container.resources?.limits?.memory).toBeDefined();
  });

  it("probes point at routes the service serves, on its ports: /healthz live, /readyz ready, gRPC health at start", () => {
    expect(container.livenessProbe?.httpGet?.path).toBe("/healthz");
    expect(container.readinessProbe?.httpGet?.path).toBe("/readyz");
    for (const probe of [container.livenessProbe, container.readinessProbe]) {
      expect(portNumber(probe?.httpGet?.port ?? "")).toBe(Number(env("HTTP_PORT")));
      expect(appSource).toContain(`path: "${probe?.httpGet?.path}"`);
    }
    expect(container.startupProbe?.grpc?.port).toBe(Number(env("GRPC_PORT")));
    expect(container.ports?.map((p) => p.containerPort).sort()).toEqual([Number(env("GRPC_PORT")), Number(env("HTTP_PORT"))].sort());
  });

  it("takes secrets from a Secret, REPLICA_ID from the pod name, and DATA_DIR on an emptyDir", () => {
    for (const name of ["DATABASE_URL", "ADMIN_TOKEN", "SIGNING_SECRET"]) {
      const variable = container.env?.find((e) => e.name === name);
      expect(variable?.value, `${name} must not be inline`).toBeUndefined();
      expect(variable?.valueFrom?.secretKeyRef).toEqual({ name: "licensing", key: name });
    }
    expect(container.env?.find((e) => e.name === "REPLICA_ID")?.valueFrom?.fieldRef?.fieldPath).toBe("metadata.name");
    const dataDir = env("DATA_DIR");
    const mount = container.volumeMounts?.find((m) => m.mountPath === dataDir);
    expect(mount).toBeDefined();
    expect(podSpec.volumes.find((v) => v.name === mount?.name)?.emptyDir).toBeDefined();
    const secret = only("secret.example.yaml", "Secret") as unknown as { metadata: { name: string }; stringData: Record<string, string> };
    expect(secret.metadata.name).toBe("licensing");
    expect(Object.keys(secret.stringData).sort()).toEqual(["ADMIN_TOKEN", "DATABASE_URL", "SIGNING_SECRET"]);
  });

  it("sets only environment variables the service reads", () => {
    for (const variable of container.env ?? []) expect(configSource, variable.name).toContain(`"${variable.name}"`);
  });

  it("gives shutdown more time than the drain grace", () => {
    expect(podSpec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(Number(env("SHUTDOWN_GRACE_MS")) + 5000);
  });

  it("the Service selects the pods and maps gRPC and HTTP to named container ports, with appProtocol", () => {
    const service = only("service.yaml", "Service") as unknown as { spec: { selector: Record<string, string>; ports: { name: string; port: number; targetPort: string; appProtocol: string }[] } };
    expect(selects(service.spec.selector)).toBe(true);
    const byName = new Map(service.spec.ports.map((p) => [p.name, p]));
    expect(portNumber(byName.get("grpc")?.targetPort ?? "")).toBe(50051);
    expect(portNumber(byName.get("http")?.targetPort ?? "")).toBe(8080);
    expect(byName.get("grpc")?.appProtocol).toBe("kubernetes.io/h2c");
    expect(byName.get("http")?.appProtocol).toBe("http");
  });

  it("the PodDisruptionBudget and the HorizontalPodAutoscaler target the Deployment and agree with its replicas", () => {
    const pdb = only("pdb.yaml", "PodDisruptionBudget") as unknown as { spec: { selector: { matchLabels: Record<string, string> }; maxUnavailable: number } };
    expect(selects(pdb.spec.selector.matchLabels)).toBe(true);
    expect(pdb.spec.maxUnavailable).toBe(1);
    const hpa = only("hpa.yaml", "HorizontalPodAutoscaler") as unknown as { spec: { scaleTargetRef: { kind: string; name: string }; minReplicas: number; maxReplicas: number } };
    expect(hpa.spec.scaleTargetRef).toMatchObject({ kind: "Deployment", name: deployment.metadata.name });
    expect(hpa.spec.minReplicas).toBe(deployment.spec.replicas);
    expect(hpa.spec.maxReplicas).toBeGreaterThan(hpa.spec.minReplicas);
    // With maxUnavailable 1, a drain never leaves fewer than minReplicas - 1 >= 2 serving.
    expect(hpa.spec.minReplicas - pdb.spec.maxUnavailable).toBeGreaterThanOrEqual(2);
  });

  it("the migration Job runs the migrate command of the same image, non-root, with the database from the Secret", () => {
    const job = only("migrate-job.yaml", "Job") as unknown as { spec: { template: { spec: { containers: Container[]; securityContext: Record<string, unknown> } } } };
    const migrate = job.spec.template.spec.containers[0];
    expect(migrate?.args).toEqual(["migrate"]);
    expect(job.spec.template.spec.securityContext).toMatchObject({ runAsNonRoot: true });
    expect(migrate?.securityContext).toMatchObject({ readOnlyRootFilesystem: true });
    expect((migrate as unknown as { image: string }).image).toBe((container as unknown as { image: string }).image);
    expect(readFileSync(join(ROOT, "src/cli/main.ts"), "utf8")).toContain('case "migrate":');
    expect(env("MIGRATE_ON_START")).toBe("false");
  });
});

function env(name: string): string {
  const value = container.env?.find((e) => e.name === name)?.value;
  if (value === undefined) throw new Error(`the Deployment does not set ${name}`);
  return value;
}
