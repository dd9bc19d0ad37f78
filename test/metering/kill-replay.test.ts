/**
 * End to end, the built service: PostgreSQL cut (TCP proxy), a Report acknowledged from the
 * spool, kill -9, PostgreSQL back, restart with the same DATA_DIR: the batch is replayed.
 * PostgreSQL only (needs a server to cut); run `npm run build` first (npm test does).
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReportRequestSchema, ReportResponseSchema } from "../../src/gen/licensing/v1/licensing_pb.js";
import { hashApiKey } from "../../src/licensing/api-keys.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { RawGrpcClient } from "../support/grpc.js";
import { makeDataDir, removeDataDir, startService, type RunningService } from "../support/service.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";
import { countEvents, seedLicence } from "./support.js";

const API_KEY = "lk_live_metering_e2e_key_0123456789";
const REPORT = "/licensing.v1.LicensingService/Report";

// Needs a PostgreSQL server to cut off: skipped without DATABASE_URL (CI sets it).
describe.skipIf(!testBackends().includes("postgres"))("kill -9 after a spooled Report (postgres)", () => {
  const backend = "postgres";
  let direct: TestStore;
  let proxy: TcpProxy;
  let dataDir: string;
  let env: Record<string, string>;
  const services: RunningService[] = [];

  beforeAll(async () => {
    direct = await createTestStore(backend);
    await seedLicence(direct.db, "lic-k", [{ feature: "export", kind: "boolean" }]);
    await direct.db
      .insertInto("api_keys")
      .values({ id: "k-e2e", license_id: "lic-k", prefix: API_KEY.slice(0, 12), secret_hash: hashApiKey(API_KEY), scopes: [], expires_at: null, revoked_at: null })
      .execute();
    const target = new URL(direct.databaseUrl ?? "");
    proxy = await startTcpProxy(Number(target.port || 5432));
    target.port = String(proxy.port);
    dataDir = await makeDataDir();
    env = { DATABASE_URL: target.toString(), DB_CONNECT_TIMEOUT_MS: "1000", ADMIN_TOKEN: "metering-e2e-admin-token", DEMO_SEED: "off" };
  });
  afterAll(async () => {
    for (const service of services) await service.stop("SIGKILL").catch(() => undefined);
    await proxy.close();
    await direct.drop();
    await removeDataDir(dataDir);
  });

  function reportVia(service: RunningService, ids: readonly string[]) {
    const client = new RawGrpcClient(`127.0.0.1:${service.grpcPort}`);
    return client
      .call(REPORT, ReportRequestSchema, ReportResponseSchema, {
        events: ids.map((id) => ({ id, credential: { case: "apiKey" as const, value: API_KEY }, feature: "export", quantity: 1n })),
      })
      .finally(() => client.close());
  }

  it("the acknowledged batch is replayed by the next start, exactly once", async () => {
    const first = await startService({ dataDir, env });
    services.push(first);
    // Caches the key and licence while PostgreSQL answers.
    expect((await reportVia(first, ["warm-1"])).accepted).toBe(1);

    proxy.cut();
    const ids = Array.from({ length: 100 }, (_, i) => `killed-${i}`);
    const answer = await reportVia(first, ids);
    expect([answer.accepted, answer.duplicates, answer.rejected.length]).toEqual([100, 0, 0]);
    const pid = first.process.pid;
    if (pid === undefined) throw new Error("no pid");
    process.kill(pid, "SIGKILL");
    await first.stop("SIGKILL");
    expect(await countEvents(direct.db, sql`id like 'killed-%'`)).toBe(0);

    proxy.restore();
    const second = await startService({ dataDir, env });
    services.push(second);
    const deadline = Date.now() + 15_000;
    let found = 0;
    while (Date.now() < deadline) {
      found = await countEvents(direct.db, sql`id like 'killed-%'`);
      if (found === 100) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(found).toBe(100);
    // And a retry of the batch now is all duplicates.
    const retry = await reportVia(second, ids);
    expect([retry.accepted, retry.duplicates]).toEqual([0, 100]);
    await second.stop();
  });
});
