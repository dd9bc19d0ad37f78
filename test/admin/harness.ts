/**
 * An in-process service for the admin tests, wired the way src/app.ts wires the real one (minus
 * LISTEN/NOTIFY: this replica invalidates its own caches on writes, exactly as app.ts does):
 * real store, caches, counting engine, decision log, Check, AdminService with the issue-7
 * handlers, the gRPC server with the metrics observer, and the HTTP server with /metrics and
 * /readyz. Ports are free ones on 127.0.0.1.
 */
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { pino } from "pino";
import { createAdminBinding, type ExtraAdminHandlers } from "../../src/admin/admin-handlers.js";
import { createAdminAuthorizer, type AdminAuthorizer } from "../../src/admin/authorizer.js";
import { createOperationsAdminHandlers } from "../../src/admin/operations.js";
import { createTokenAdminHandlers } from "../../src/admin/tokens.js";
import { AdminService } from "../../src/gen/licensing/admin/v1/admin_pb.js";
import { LicensingService } from "../../src/gen/licensing/v1/licensing_pb.js";
import { createLicensingCaches, type LicensingCaches } from "../../src/licensing/caches.js";
import { createDecisionLog, type DecisionLog } from "../../src/licensing/decision-log.js";
import { createCounters, type CountersEngine } from "../../src/licensing/engine/index.js";
import { createOperationCache } from "../../src/licensing/idempotency.js";
import { createIdentityResolver } from "../../src/licensing/identity.js";
import { createCheckHandler } from "../../src/licensing/check.js";
import type { CheckAnswer } from "../../src/licensing/check-response.js";
import { createMetrics, metricsRoute, type Metrics } from "../../src/metrics/index.js";
import { createReadiness, readinessRoute, type Readiness } from "../../src/metrics/readiness.js";
import { applyRules, type IssuedKey } from "../../src/rules/apply.js";
import { parseRules } from "../../src/rules/parse.js";
import { unimplemented } from "../../src/server/errors.js";
import { createGrpcServer, type GrpcServer } from "../../src/server/grpc-server.js";
import { createHealthRegistry } from "../../src/server/health.js";
import { createHttpServer, type HttpServer } from "../../src/server/http-server.js";
import type { ServiceBinding } from "../../src/server/rpc.js";
import type { Store } from "../../src/store/database.js";

export const OPERATOR_TOKEN = "operator-token-for-admin-tests-0123456789";

export interface Harness {
  readonly grpcUrl: string;
  readonly httpUrl: string;
  readonly caches: LicensingCaches;
  readonly engine: CountersEngine;
  readonly decisionLog: DecisionLog;
  readonly metrics: Metrics;
  readonly readiness: Readiness;
  readonly authorizer: AdminAuthorizer;
  /** An AdminService client sending `token` (undefined: no authorization header). */
  admin(token: string | undefined): Client<typeof AdminService>;
  readonly licensing: Client<typeof LicensingService>;
  /** Applies a rules document directly; returns the issued keys by id. */
  apply(document: string): Promise<Map<string, IssuedKey>>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  readonly now?: () => number;
  readonly ping?: () => Promise<void>;
}

export async function startHarness(store: Store, options: HarnessOptions = {}): Promise<Harness> {
  const now = options.now ?? Date.now;
  const logger = pino({ level: "silent" });
  const db = store.db;
  const caches = createLicensingCaches({ db, now, unknownKeyCacheMs: 1000 });
  const engine = createCounters({ db, replicaId: "admin-test", now, logger, autoRun: false });
  const decisionLog = createDecisionLog({ db, replicaId: "admin-test", now, logger, flushIntervalMs: 3_600_000 });
  const metrics = createMetrics();
  metrics.watchEngine(() => engine.stats());
  metrics.watchDecisionLog(() => decisionLog.stats());
  let serving = false;
  const readiness = createReadiness({
    migrated: () => serving,
    ping: options.ping ?? (() => store.ping()),
    cachedLicenses: () => caches.licenses.size,
    intervalMs: 3_600_000,
    logger,
  });
  const authorizer = createAdminAuthorizer({ adminToken: OPERATOR_TOKEN, db, now, logger });
  // Check only (Report, Scale and later RPCs are other issues'): the binding is built here so
  // the harness does not follow every change of licensing-binding.ts.
  const check = createCheckHandler({
    resolveIdentity: createIdentityResolver({ keys: caches.keys }),
    licenses: caches.licenses,
    accountLicenses: caches.accountLicenses,
    counters: engine,
    operations: createOperationCache<CheckAnswer>({ windowMs: 60_000, maxEntries: 1000, now }),
    decisions: readiness.watchingRecorder(metrics.countingRecorder(decisionLog)),
    now,
    cacheTtlMs: 5000,
  });
  const licensing = {
    service: LicensingService,
    handlers: { ...unimplementedHandlers(LicensingService), check },
  } as unknown as ServiceBinding<typeof LicensingService>;
  const extraHandlers = {
    ...unimplementedHandlers(AdminService),
    ...createTokenAdminHandlers({
      db,
      authenticate: authorizer.operatorOnly,
      signingSecret: new Uint8Array(32).fill(7),
      onSigningKeysChanged: () => undefined,
      now,
      logger,
    }),
    ...createOperationsAdminHandlers({
      db,
      authorize: authorizer.authorize,
      onChange: caches.onChange,
      onAdminTokenRevoked: authorizer.invalidate,
      now,
      logger,
    }),
  } as ExtraAdminHandlers;
  const admin = createAdminBinding({
    db,
    authenticate: authorizer.operatorOnly,
    onRulesChanged: () => caches.onChange("*"),
    now,
    logger,
    extraHandlers,
  });
  const health = createHealthRegistry();
  const grpc: GrpcServer = createGrpcServer({ bindings: [licensing, admin], health, reflectionFiles: [], logger, onCall: metrics.observeRpc });
  const http: HttpServer = createHttpServer({
    bindings: [licensing, admin],
    routes: [metricsRoute(metrics.registry), readinessRoute(readiness)],
    logger,
  });
  const grpcPort = await grpc.listen("127.0.0.1", 0);
  const httpPort = await http.listen("127.0.0.1", 0);
  await engine.start();
  await decisionLog.start();
  serving = true;
  const grpcUrl = `http://127.0.0.1:${grpcPort}`;

  return {
    grpcUrl,
    httpUrl: `http://127.0.0.1:${httpPort}`,
    caches,
    engine,
    decisionLog,
    metrics,
    readiness,
    authorizer,
    admin(token) {
      return createClient(
        AdminService,
        createGrpcTransport({
          baseUrl: grpcUrl,
          interceptors: [
            (next) => (request) => {
              if (token !== undefined) request.header.set("authorization", `Bearer ${token}`);
              return next(request);
            },
          ],
        }),
      );
    },
    licensing: createClient(LicensingService, createGrpcTransport({ baseUrl: grpcUrl })),
    async apply(document) {
      const result = await applyRules(db, parseRules(document), { prune: false, dryRun: false, now: new Date(now()) });
      caches.onChange("*");
      return new Map(result.issuedKeys.map((key) => [key.id, key]));
    },
    async close() {
      readiness.stop();
      await Promise.all([grpc.shutdown(1000), http.close(1000)]);
      await engine.stop();
      await decisionLog.stop();
    },
  };
}

/** UNIMPLEMENTED for every method of `service` (those of other issues, e.g. GetUsageStatement). */
function unimplementedHandlers(service: DescService): Record<string, () => never> {
  const handlers: Record<string, () => never> = {};
  for (const method of service.methods) {
    handlers[method.localName] = () => {
      throw unimplemented(`${method.name} is not part of this test harness`);
    };
  }
  return handlers;
}

