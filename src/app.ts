/**
 * The service assembled from its dependencies: store, caches, handlers, both listeners. Built by
 * main.ts (and by tests) with a validated Config and a logger; listens only when `start` is
 * called, and `stop` undoes everything in order.
 *
 * Start order: listeners first, reporting NOT_SERVING, so orchestrators see a live process
 * while migrations run; then migrate, seed the demo if the embedded database is new, and only
 * then SERVING. Stop order: NOT_SERVING, stop accepting, let in-flight calls finish within the
 * grace period, close the store.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { file_licensing_admin_v1_admin } from "./gen/licensing/admin/v1/admin_pb.js";
import { file_licensing_v1_licensing } from "./gen/licensing/v1/licensing_pb.js";
import { createAdminAuthorizer } from "./admin/authorizer.js";
import { createOperationsAdminHandlers } from "./admin/operations.js";
import { createUsageAdminHandlers } from "./metering/usage-admin.js";
import { createMetrics, createReadiness, metricsRoute, readinessRoute, type Metrics, type Readiness } from "./metrics/index.js";
import { ledgerCapacityUsage } from "./scaling/statement-source.js";
import { createAdminBinding } from "./admin/admin-handlers.js";
import { ensureAdminTokenFile } from "./admin/admin-token.js";
import type { Config } from "./config.js";
import { file_envoy_service_auth_v3_external_auth } from "./gen/envoy/service/auth/v3/external_auth_pb.js";
import { createAuthorizationBinding, createExtAuthzGrpcHandler, EXT_AUTHZ_CHECK_PATH } from "./envoy/ext-authz.js";
import { createForwardAuthRoute } from "./envoy/forward-auth.js";
import { createRouteMatcher, type RouteMatcher } from "./envoy/route-table.js";
import type { AuthzDeps } from "./envoy/authorizer.js";
import { createTokenAdminHandlers } from "./admin/tokens.js";
import { createLicensingCaches } from "./licensing/caches.js";
import { bearerTokenVerifier, licenseTokenVerifier, serviceCallers } from "./licensing/credential-verifiers.js";
import { loadIssuers } from "./licensing/credentials/issuers.js";
import { createJwtVerifier } from "./licensing/credentials/jwt.js";
import { createLicenseTokenVerifier, type LicenseTokenVerifier } from "./licensing/credentials/license-tokens.js";
import { createServiceTokenAuthorizer } from "./licensing/credentials/service-tokens.js";
import { ensureSigningSecretFile } from "./licensing/credentials/signing-secret.js";
import { createDecisionLog, type DecisionLog } from "./licensing/decision-log.js";
import { createCounters, type CountersEngine } from "./licensing/engine/index.js";
import type { CheckAnswer } from "./licensing/check-response.js";
import { createOperationCache } from "./licensing/idempotency.js";
import { createIdentityResolver } from "./licensing/identity.js";
import { CHECK_PATH, createCheckGrpcHandler, createLicensingBinding, type LicensingDeps } from "./licensing/licensing-binding.js";
import { createMetering, type Metering } from "./metering/metering.js";
import { file_externalscaler_externalscaler } from "./gen/externalscaler/externalscaler_pb.js";
import { createAutoScaler, type AutoScaler } from "./scaling/auto-scaler.js";
import { createCapacityScaler } from "./scaling/capacity-scaler.js";
import { countLiveSeats } from "./scaling/capacity-store.js";
import { createForecast } from "./scaling/forecast.js";
import { createKedaScaler } from "./scaling/keda-scaler.js";
import { createScaleHandler } from "./scaling/scale-handler.js";
import { findAccountLicense } from "./store/licenses.js";
import type { Logger } from "./logger.js";
import { packageRoot } from "./package-root.js";
import { applyRules, type IssuedKey } from "./rules/apply.js";
import { parseRules } from "./rules/parse.js";
import { createGrpcServer, type GrpcServer } from "./server/grpc-server.js";
import { createHealthRegistry, type HealthRegistry } from "./server/health.js";
import { unavailable } from "./server/errors.js";
import { createHttpServer, type HttpRoute, type HttpServer } from "./server/http-server.js";
import type { ServiceBinding, UnaryHandlers } from "./server/rpc.js";
import { createStore, type Store } from "./store/database.js";
import { migrateToLatest, pendingMigrations } from "./store/migrate.js";
import { createChangeListener, type ChangeListener } from "./store/notify.js";
import { loadRoutes } from "./store/routes.js";

export interface AppOptions {
  readonly config: Config;
  readonly logger: Logger;
  /** Epoch milliseconds; injected so tests can fix time. */
  readonly now?: () => number;
  /** Where to print the one-time demo banner (a person reads it; it is not a log line). */
  readonly announce?: (text: string) => void;
  /**
   * Collects /metrics for the response (WORKERS > 1: the primary's sum over all workers);
   * default: this process's own registry.
   */
  readonly collectMetrics?: (metrics: Metrics) => (() => Promise<string>) | undefined;
}

export interface StartedApp {
  readonly grpcPort: number;
  readonly httpPort: number;
}

export interface App {
  start(): Promise<StartedApp>;
  stop(): Promise<void>;
  readonly health: HealthRegistry;
  readonly metrics: Metrics;
}

/** The service names health reports on, besides "" (the whole server). */
const SERVICES = [
  "licensing.v1.LicensingService",
  "licensing.admin.v1.AdminService",
  "envoy.service.auth.v3.Authorization",
];

/**
 * Data-plane calls that arrive while the service starts (listening, not yet migrated) get
 * UNAVAILABLE, the answer a starting server gives: the caller retries elsewhere.
 */
function gateUntilReady<S extends ServiceBinding>(binding: S, isReady: () => boolean): S {
  const gated: Record<string, unknown> = {};
  for (const [name, handler] of Object.entries(binding.handlers as Record<string, (req: unknown, ctx: unknown) => unknown>)) {
    gated[name] = untilReady(handler, isReady);
  }
  return { ...binding, handlers: gated as UnaryHandlers<S["service"]> } as S;
}

/** One handler, answering UNAVAILABLE until the service is ready. */
function untilReady<Req, Ctx, Res>(handler: (request: Req, context: Ctx) => Res, isReady: () => boolean): (request: Req, context: Ctx) => Res {
  return (request, context) => {
    if (!isReady()) throw unavailable("the service is starting: retry shortly");
    return handler(request, context);
  };
}

export function createApp(options: AppOptions): App {
  const { config, logger } = options;
  const now = options.now ?? Date.now;
  const health = createHealthRegistry();
  const metrics = createMetrics();
  let readiness: Readiness | undefined;
  let store: Store | undefined;
  let counters: CountersEngine | undefined;
  let decisionLog: DecisionLog | undefined;
  let listener: ChangeListener | undefined;
  let metering: Metering | undefined;
  let autoScaler: AutoScaler | undefined;
  let grpc: GrpcServer | undefined;
  let http: HttpServer | undefined;
  let ready = false;

  async function start(): Promise<StartedApp> {
    health.setAll("NOT_SERVING");
    const opened = await createStore({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      poolMax: config.dbPoolMax,
      connectTimeoutMs: config.dbConnectTimeoutMs,
      logger: logger.child({ component: "store" }),
    });
    store = opened;
    logger.info({ database: opened.describe(), replicaId: config.replicaId }, "store opened");
    const db = opened.db;

    const jwt = createJwtVerifier({ jwksCooldownMs: config.jwksCooldownMs, jwksCacheMaxAgeMs: config.jwksCacheMaxAgeMs });
    const licenseTokens = createLicenseTokenVerifier({ db, now });
    const serviceTokens = createServiceTokenAuthorizer({ db, now, unknownTokenCacheMs: config.unknownKeyCacheMs });
    const credentialLog = logger.child({ component: "credentials" });
    const reloadIssuers = () => reloadInBackground(() => loadIssuers(db).then((issuers) => jwt.setIssuers(issuers)), credentialLog, "issuers");
    const reloadSigningKeys = () => reloadInBackground(() => licenseTokens.reload(), credentialLog, "signing keys");
    // Swapped whole on a change, so a request sees either the old table or the new one.
    let routeMatcher: RouteMatcher = createRouteMatcher([]);
    const reloadRoutes = () =>
      reloadInBackground(
        () => loadRoutes(db).then((table) => void (routeMatcher = createRouteMatcher(table))),
        logger.child({ component: "authz" }),
        "routes",
      );
    const caches = createLicensingCaches({
      db,
      now,
      unknownKeyCacheMs: config.unknownKeyCacheMs,
      onOtherChange: (payload) => {
        if (payload === "issuers") reloadIssuers();
        else if (payload === "routes") reloadRoutes();
        else if (payload === "signing_keys") reloadSigningKeys();
        else if (payload.startsWith("service_token:")) serviceTokens.invalidate(payload.slice("service_token:".length));
        else {
          serviceTokens.invalidateAll();
          reloadIssuers();
          reloadSigningKeys();
          reloadRoutes();
        }
      },
    });
    const invalidateEverything = () => caches.onChange("*");
    const engine = createCounters({
      db,
      replicaId: config.replicaId,
      now,
      logger: logger.child({ component: "counters" }),
      leaseTtlMs: config.leaseTtlMs,
      seatTtlMs: config.seatTtlMs,
      settleIntervalMs: config.settleIntervalMs,
      heartbeatIntervalMs: config.heartbeatIntervalMs,
    });
    const log = createDecisionLog({
      db,
      replicaId: config.replicaId,
      mode: config.decisionLog,
      maxQueue: config.decisionLogMaxQueue,
      flushIntervalMs: config.decisionLogFlushMs,
      now,
      logger: logger.child({ component: "decision-log" }),
    });
    counters = engine;
    decisionLog = log;
    metrics.watchEngine(() => engine.stats());
    metrics.watchDecisionLog(() => log.stats());
    metrics.watchPool(() => opened.poolStats?.());
    const probes = createReadiness({
      migrated: () => ready,
      ping: () => opened.ping(),
      cachedLicenses: () => caches.licenses.size,
      logger: logger.child({ component: "readiness" }),
    });
    readiness = probes;
    listener = createChangeListener({
      store: opened,
      logger: logger.child({ component: "listen" }),
      onChange: caches.onChange,
      onReconnect: invalidateEverything,
    });

    const adminToken = await resolveAdminToken(config, opened, logger);
    const signingSecret = await resolveSigningSecret(config, opened, logger);
    const resolveIdentity = createIdentityResolver({
      keys: caches.keys,
      bearerTokens: bearerTokenVerifier(jwt),
      licenseTokens: licenseTokenVerifier(licenseTokens),
      serviceCallers: serviceCallers(serviceTokens),
    });
    const meter = createMetering({
      db,
      resolveIdentity,
      licenses: caches.licenses,
      accountLicenses: caches.accountLicenses,
      spoolDir: config.usageSpoolDir,
      spoolMaxBytes: config.usageSpoolMaxBytes,
      maxEventAgeMs: config.usageMaxEventAgeMs,
      maxFutureSkewMs: config.usageMaxFutureSkewMs,
      reservationTtlMs: config.reservationTtlMs,
      reservationFlushMs: config.reservationFlushMs,
      replayIntervalMs: config.usageReplayIntervalMs,
      partitionsAhead: config.usagePartitionsAhead,
      writeTimeoutMs: config.usageWriteTimeoutMs,
      now,
      logger: logger.child({ component: "metering" }),
    });
    metering = meter;
    registerMeteringMetrics(metrics, meter);
    const scalingLog = logger.child({ component: "scaling" });
    const forecast = createForecast({
      halfLifeMs: config.scalingForecastHalfLifeMs,
      // Each replica sees its share of a quota's traffic; the cluster's rate is about N times it.
      // Read on every quota Check (depletes_at): the count itself, not a copy of every stat.
      clusterFactor: engine.liveReplicas,
    });
    const scaler = createCapacityScaler({ db, now, currency: config.currency, logger: scalingLog, forecast });
    autoScaler = createAutoScaler({ db, scaler, forecast, now, logger: scalingLog, intervalMs: config.scalingAutoIntervalMs });
    const keda = createKedaScaler({
      resolveIdentity,
      snapshot: (id) => caches.licenses.get(id),
      liveInstances: (id, feature, nowMs) => countLiveSeats(db, id, feature, nowMs),
      forecast,
      now,
      streamIntervalMs: config.kedaStreamIntervalMs,
    });
    registerScalingMetrics(metrics, autoScaler, forecast, keda);
    const licensingDeps: LicensingDeps = {
      scale: createScaleHandler({ resolveIdentity, scaler, accountLicense: (id) => findAccountLicense(db, id), now, logger: scalingLog }),
      forecast,
      resolveIdentity,
      report: meter.report,
      reservations: meter.reservations,
      licenses: caches.licenses,
      accountLicenses: caches.accountLicenses,
      counters: engine,
      operations: createOperationCache<CheckAnswer>({ windowMs: config.operationWindowMs, maxEntries: config.operationCacheMax, now }),
      // Every decision is counted for /metrics and watched for readiness, then logged.
      decisions: probes.watchingRecorder(metrics.countingRecorder(log)),
      now,
      cacheTtlMs: config.checkCacheTtlMs,
    };
    const licensing = createLicensingBinding(licensingDeps);
    const authz: AuthzDeps = {
      check: licensing.handlers.check,
      routes: (method, path) => routeMatcher(method, path),
      logger: logger.child({ component: "authz" }),
      options: { removeCredentialHeader: config.authzRemoveCredential },
    };
    const adminLog = logger.child({ component: "admin" });
    const authorizer = createAdminAuthorizer({ adminToken, db, now, logger: adminLog });
    // Apply, Export, licence tokens and signing keys are the operator's alone.
    const authenticate = authorizer.operatorOnly;
    const bindings = [
      gateUntilReady(licensing, () => ready),
      gateUntilReady(createAuthorizationBinding(authz), () => ready),
      createAdminBinding({
        db,
        authenticate,
        // This replica sees its own writes at once; the others hear of them by NOTIFY.
        onRulesChanged: invalidateEverything,
        now,
        logger: adminLog,
        extraHandlers: {
          ...createTokenAdminHandlers({
            db,
            authenticate,
            signingSecret,
            onSigningKeysChanged: () => licenseTokens.reload(),
            now,
            logger: adminLog,
          }),
          ...createOperationsAdminHandlers({
            db,
            authorize: authorizer.authorize,
            onChange: caches.onChange,
            onAdminTokenRevoked: authorizer.invalidate,
            now,
            logger: adminLog,
          }),
          ...createUsageAdminHandlers({
            db,
            authorize: authorizer.authorize,
            statementGraceMs: config.statementGraceMs,
            currency: config.currency,
            capacity: ledgerCapacityUsage(now),
            now,
          }),
        },
      }),
    ];

    grpc = createGrpcServer({
      bindings,
      health,
      reflectionFiles: [
        file_licensing_v1_licensing,
        file_licensing_admin_v1_admin,
        file_envoy_service_auth_v3_external_auth,
        file_externalscaler_externalscaler,
      ],
      rawMounts: [keda],
      // Check and Envoy's Check, answered bytes to bytes without building the response
      // messages (licensing-binding.ts, ext-authz.ts); the HTTP port serves the bindings.
      rawUnary: new Map([
        [CHECK_PATH, untilReady(createCheckGrpcHandler(licensingDeps), () => ready)],
        [EXT_AUTHZ_CHECK_PATH, untilReady(createExtAuthzGrpcHandler(authz), () => ready)],
      ]),
      maxReceiveMessageBytes: config.maxMessageBytes,
      logger: logger.child({ component: "grpc" }),
      onCall: metrics.observeRpc,
    });
    http = createHttpServer({
      bindings,
      routes: [
        healthzRoute(),
        readinessRoute(probes),
        metricsRoute(metrics.registry, options.collectMetrics?.(metrics)),
        createForwardAuthRoute(authz),
        jwksRoute(licenseTokens),
      ],
      maxBodyBytes: config.maxMessageBytes,
      logger: logger.child({ component: "http" }),
    });
    const grpcPort = await grpc.listen(config.host, config.grpcPort);
    const grpcServer = grpc;
    metrics.registerSource("grpc", () => ({ fast_lane: grpcServer.fastLane ? 1 : 0 }), {
      fast_lane: { help: "Processes answering Check and Envoy's Check on the gRPC fast lane (0: grpc-js serves them, slower)." },
    });
    const httpPort = await http.listen(config.host, config.httpPort);
    logger.info({ host: config.host, grpcPort, httpPort }, "listening (not serving until migrated)");

    await prepareDatabase(config, opened, logger);
    await listener.start();
    jwt.setIssuers(await loadIssuers(db));
    routeMatcher = createRouteMatcher(await loadRoutes(db));
    await licenseTokens.reload();
    await engine.start();
    // Replays any spool an earlier process left before new Reports are accepted.
    await meter.start();
    await log.start();
    autoScaler.start();
    await seedDemoIfNew(config, opened, { grpcPort, httpPort }, logger, options.announce, now);

    ready = true;
    probes.start();
    health.setAll("SERVING");
    for (const service of SERVICES) health.set(service, "SERVING");
    logger.info("serving");
    return { grpcPort, httpPort };
  }

  async function stop(): Promise<void> {
    ready = false;
    readiness?.stop();
    health.setAll("NOT_SERVING");
    logger.info({ graceMs: config.shutdownGraceMs }, "shutting down: draining in-flight calls");
    await Promise.all([grpc?.shutdown(config.shutdownGraceMs), http?.close(config.shutdownGraceMs)]);
    // In-flight calls are done: settle leases and seats, then write the last decisions.
    await autoScaler?.stop();
    await counters?.stop();
    await metering?.stop();
    await decisionLog?.stop();
    await listener?.stop();
    await store?.close();
    logger.info("stopped");
  }

  return { start, stop, health, metrics };
}

async function resolveAdminToken(config: Config, store: Store, logger: Logger): Promise<string | undefined> {
  if (config.adminToken !== undefined) return config.adminToken;
  if (store.backend === "pglite") {
    const token = await ensureAdminTokenFile(config.dataDir);
    logger.info({ file: join(config.dataDir, "admin-token") }, "admin token read from the data directory");
    return token;
  }
  logger.warn("ADMIN_TOKEN is not set: the admin API refuses every call");
  return undefined;
}

/**
 * The key that encrypts licence-token signing keys: SIGNING_SECRET, or in embedded mode a file
 * generated into the data directory. Without one (PostgreSQL and no SIGNING_SECRET) tokens can
 * be verified but not issued.
 */
async function resolveSigningSecret(config: Config, store: Store, logger: Logger): Promise<Buffer | undefined> {
  if (config.signingKeySecret !== undefined) return config.signingKeySecret;
  if (store.backend === "pglite") return ensureSigningSecretFile(config.dataDir);
  logger.warn("SIGNING_SECRET is not set: licence tokens can be verified but not issued");
  return undefined;
}

/** Reloads credential state after a change notification; a failure keeps the previous state. */
function reloadInBackground(reload: () => Promise<void>, logger: Logger, what: string): void {
  reload().catch((error: unknown) => {
    // The previous issuers or keys stay in force; the next notification or reconnect retries.
    logger.warn({ err: error, what }, "could not reload credentials after a change");
  });
}

/** The public keys of licence tokens, for offline verification by anyone. */
function jwksRoute(verifier: LicenseTokenVerifier): HttpRoute {
  return {
    method: "GET",
    path: "/.well-known/jwks.json",
    handle: (_req, res) => {
      // Short: a rotated key signs at once, and some verifiers do not refetch on an unknown kid.
      res.writeHead(200, { "content-type": "application/jwk-set+json", "cache-control": "public, max-age=60" });
      res.end(JSON.stringify(verifier.jwksDocument()));
    },
  };
}

async function prepareDatabase(config: Config, store: Store, logger: Logger): Promise<void> {
  if (config.migrateOnStart) {
    const { applied } = await migrateToLatest(store.db);
    if (applied.length > 0) logger.info({ migrations: applied }, "migrations applied");
    return;
  }
  const pending = await pendingMigrations(store.db);
  if (pending.length > 0) {
    throw new Error(
      `MIGRATE_ON_START is false and ${pending.length} migration(s) are pending (${pending.join(", ")}): run "licensing migrate" first`,
    );
  }
}

/**
 * First start of an empty embedded database: apply examples/demo.yaml so `npm start` has
 * something to call, and show the new demo keys once.
 */
async function seedDemoIfNew(
  config: Config,
  store: Store,
  ports: StartedApp,
  logger: Logger,
  announce: ((text: string) => void) | undefined,
  now: () => number,
): Promise<void> {
  if (config.demoSeed !== "auto" || store.backend !== "pglite") return;
  const existing = await store.db.selectFrom("accounts").select("id").limit(1).executeTakeFirst();
  if (existing !== undefined) return;
  const document = await readFile(join(packageRoot(), "examples", "demo.yaml"), "utf8");
  const result = await applyRules(store.db, parseRules(document), { prune: false, dryRun: false, now: new Date(now()) });
  logger.info({ keys: result.issuedKeys.map((k) => k.id) }, "demo rules applied to the new embedded database");
  announce?.(demoBanner(result.issuedKeys, config.host, ports));
}

function demoBanner(keys: readonly IssuedKey[], host: string, ports: StartedApp): string {
  const key = keys.find((k) => k.id === "demo-key") ?? keys[0];
  if (key === undefined) return "";
  const address = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  return [
    "",
    `Demo data seeded. API key for licence ${key.licenseId} (shown once, store it now):`,
    `  ${key.secret}`,
    "",
    "Ask for a decision over gRPC (grpcurl uses server reflection):",
    `  grpcurl -plaintext -d '{"api_key":"${key.secret}","feature":"reports.export"}' ${address}:${ports.grpcPort} licensing.v1.LicensingService/Check`,
    "",
    "Or with curl, over the Connect JSON protocol:",
    `  curl -s http://${address}:${ports.httpPort}/licensing.v1.LicensingService/Check -H 'content-type: application/json' -d '{"apiKey":"${key.secret}","feature":"reports.export"}'`,
    "",
  ].join("\n");
}

/** Liveness: the process runs and its event loop turns. Readiness is /readyz (src/metrics). */
function healthzRoute(): HttpRoute {
  return {
    method: "GET",
    path: "/healthz",
    handle: (_req, res) => {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end('{"status":"ok"}');
    },
  };
}

/** Auto mode, forecasts and KEDA streams, read when /metrics is scraped. */
function registerScalingMetrics(
  metrics: Metrics,
  auto: AutoScaler,
  forecast: { stats(): { keys: number; evicted: number } },
  keda: { stats(): { openStreams: number; refusedStreams: number; evaluations: number } },
): void {
  metrics.registerSource(
    "scaling",
    () => {
      const a = auto.stats();
      const f = forecast.stats();
      const k = keda.stats();
      return {
        auto_passes_total: a.passes,
        auto_scaled_up_total: a.scaledUp,
        auto_scaled_down_total: a.scaledDown,
        auto_ahead_of_exhaustion_total: a.aheadOfExhaustion,
        auto_failures_total: a.failures,
        forecast_keys: f.keys,
        forecast_evicted_total: f.evicted,
        keda_open_streams: k.openStreams,
        keda_refused_streams_total: k.refusedStreams,
      };
    },
    {
      auto_passes_total: { help: "Auto-scaling passes run.", type: "counter" },
      auto_scaled_up_total: { help: "Capacities grown by auto mode.", type: "counter" },
      auto_scaled_down_total: { help: "Capacities shrunk by auto mode.", type: "counter" },
      auto_ahead_of_exhaustion_total: {
        help: "Scale-ups made because the forecast said units run out within the horizon.",
        type: "counter",
      },
      auto_failures_total: { help: "Auto-scaling passes or entitlements that failed (logged).", type: "counter" },
      forecast_keys: { help: "Quotas and capacities whose consumption rate is tracked." },
      forecast_evicted_total: { help: "Tracked rates dropped because the forecast was full.", type: "counter" },
      keda_open_streams: { help: "Open KEDA StreamIsActive streams." },
      keda_refused_streams_total: { help: "KEDA streams refused because too many were open.", type: "counter" },
    },
  );
}

/** Spool depth and Report outcomes, read from the metering component when /metrics is scraped. */
function registerMeteringMetrics(metrics: Metrics, meter: Metering): void {
  metrics.registerSource(
    "usage",
    () => {
      const { spool, recorder, reservations } = meter.stats();
      return {
        spool_events: spool.events,
        spool_bytes: spool.bytes,
        spool_torn_records_total: spool.tornRecords,
        spool_rejected_full_total: spool.rejectedFull,
        events_accepted_total: recorder.eventsAccepted,
        events_duplicate_total: recorder.eventsDuplicate,
        events_spooled_total: recorder.eventsSpooled,
        replay_failures_total: recorder.replayFailures,
        group_commits_total: recorder.groupCommits,
        group_commit_batches_total: recorder.groupCommitBatches,
        group_commit_splits_total: recorder.groupCommitSplits,
        database_up: recorder.databaseUp ? 1 : 0,
        reservations_dropped_total: reservations.dropped,
        reservations_expired_total: reservations.expired,
        reservations_pending_release_units: reservations.pendingReleaseUnits,
      };
    },
    {
      spool_events: { help: "Usage events waiting in the local spool for PostgreSQL." },
      spool_bytes: { help: "Bytes of the usage spool's segment files." },
      spool_torn_records_total: { help: "Torn or corrupt spool records skipped at replay.", type: "counter" },
      spool_rejected_full_total: { help: "Report batches refused because the spool was full.", type: "counter" },
      events_accepted_total: { help: "Usage events recorded for the first time.", type: "counter" },
      events_duplicate_total: { help: "Usage events whose id was already recorded.", type: "counter" },
      events_spooled_total: { help: "Usage events written to the spool.", type: "counter" },
      replay_failures_total: { help: "Spool replays that failed and will be retried.", type: "counter" },
      group_commits_total: { help: "Transactions written for Report batches that move quota counters (group commit).", type: "counter" },
      group_commit_batches_total: { help: "Report batches carried by those transactions.", type: "counter" },
      group_commit_splits_total: { help: "Groups that failed together and were written again one batch at a time (logged).", type: "counter" },
      database_up: { help: "1 when Report's last write reached PostgreSQL, else 0." },
      reservations_dropped_total: { help: "Reservations dropped because their queue was full.", type: "counter" },
      reservations_expired_total: { help: "Reservations released unsettled after RESERVATION_TTL_MS.", type: "counter" },
      reservations_pending_release_units: { help: "Units of expired reservations still to be released." },
    },
  );
}
