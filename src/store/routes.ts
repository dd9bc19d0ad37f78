/** Route rules as the proxy adapters use them (src/envoy/route-table.ts). */
import type { Kysely } from "kysely";
import type { RouteRule } from "../envoy/route-table.js";
import type { Database } from "./schema.js";

export async function loadRoutes(db: Kysely<Database>): Promise<RouteRule[]> {
  const rows = await db.selectFrom("routes").select(["method", "path_prefix", "feature", "cost"]).orderBy("id").execute();
  return rows.map((row) =>
    row.method === "*"
      ? { pathPrefix: row.path_prefix, feature: row.feature, cost: row.cost }
      : { method: row.method, pathPrefix: row.path_prefix, feature: row.feature, cost: row.cost },
  );
}
