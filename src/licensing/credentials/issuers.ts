/**
 * The `issuers` table as the JWT verifier needs it.
 */
import type { Kysely } from "kysely";
import type { Database } from "../../store/schema.js";
import type { IssuerConfig } from "./jwt.js";

/** Every configured identity provider; reload on `licensing_changes` "issuers". */
export async function loadIssuers(db: Kysely<Database>): Promise<IssuerConfig[]> {
  const rows = await db.selectFrom("issuers").selectAll().orderBy("id").execute();
  return rows.map((row) =>
    Object.freeze({
      id: row.id,
      issuer: row.issuer,
      jwksUrl: row.jwks_url,
      audiences: Object.freeze([...row.audiences]),
      algorithms: Object.freeze([...row.algorithms]),
      leewaySeconds: Number(row.leeway_seconds),
      licenseClaim: row.license_claim,
      accountClaim: row.account_claim,
      rolesClaim: row.roles_claim,
    }),
  );
}
