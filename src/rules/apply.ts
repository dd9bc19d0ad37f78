/**
 * Apply a rules document: diff it against the database and write the difference, all in one
 * transaction. See docs/rules.md for the semantics an operator relies on.
 */
import { sql, type Kysely, type Transaction } from "kysely";
import { generateApiKey } from "../licensing/api-keys.js";
import { generateServiceToken } from "../licensing/credentials/service-token-secrets.js";
import type { Database } from "../store/schema.js";
import { diffEntitlements, diffRules, type Change, type RulesDiff } from "./diff.js";
import { RulesError, type RuleIssue } from "./errors.js";
import { readRules } from "./read.js";
import type {
  ApiKeyRule,
  EntitlementRule,
  IssuerRule,
  LicenseRule,
  PlanRule,
  RulesDocument,
  ServiceTokenRule,
} from "./types.js";
import { validateRules } from "./validate.js";

export type { Change, ChangeAction, ChangeKind } from "./diff.js";

export interface ApplyOptions {
  /** Delete accounts, plans, licences, keys, issuers and service tokens the document does not declare. */
  readonly prune: boolean;
  /** Compute and return the changes, write nothing, issue no secrets. */
  readonly dryRun: boolean;
  /** The time written to created_at, updated_at and revoked_at. */
  readonly now: Date;
}

/**
 * An API key or service token created by this apply. The secret exists only here: the database
 * keeps its hash.
 */
export interface IssuedKey {
  readonly kind: "api_key" | "service_token";
  readonly id: string;
  /** The key's licence; "" for service tokens, which belong to no licence. */
  readonly licenseId: string;
  readonly secret: string;
  readonly prefix: string;
}

export interface ApplyResult {
  /** What changed (or, in a dry run, would change), in write order; unchanged objects are absent. */
  readonly changes: Change[];
  /** One per created key or service token, sorted by kind then id; empty in a dry run. Never log these. */
  readonly issuedKeys: IssuedKey[];
}

/**
 * Makes the database match `doc` in one transaction and reports what changed.
 *
 * Promises: applying the same document twice changes nothing the second time; existing keys and
 * service tokens keep their secret; a dry run writes nothing; on any error (RulesError for an
 * invalid document, or for an issuer whose `iss` an undeclared issuer in the database already
 * has; or a database error) nothing is written. Concurrent applies are serialized by a
 * transaction-scoped advisory lock, so each diffs against the state the previous one left.
 */
export async function applyRules(db: Kysely<Database>, doc: RulesDocument, options: ApplyOptions): Promise<ApplyResult> {
  // Re-validated because callers may build documents in code; for parsed ones this is cheap.
  const checked = validateRules(doc);
  if (!checked.ok) throw new RulesError(checked.issues);
  const desired = checked.document;
  return db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${APPLY_LOCK_KEY})`.execute(trx);
    const current = await readRules(trx);
    const diff = diffRules(current, desired, { prune: options.prune });
    const conflicts = issuerConflicts(current, desired, options.prune);
    if (conflicts.length > 0) throw new RulesError(conflicts);
    if (options.dryRun) return { changes: diff.changes, issuedKeys: [] };
    const issuedKeys = await writeDiff(trx, current, desired, diff, options.now);
    return { changes: diff.changes, issuedKeys };
  });
}

/** Arbitrary, fixed: identifies "a rules apply is running" among advisory locks. */
const APPLY_LOCK_KEY = 7_311_529_001;

interface WriteContext {
  readonly trx: Transaction<Database>;
  readonly current: RulesDocument;
  readonly desired: RulesDocument;
  readonly now: Date;
  readonly issuedKeys: IssuedKey[];
}

async function writeDiff(
  trx: Transaction<Database>,
  current: RulesDocument,
  desired: RulesDocument,
  diff: RulesDiff,
  now: Date,
): Promise<IssuedKey[]> {
  const context: WriteContext = { trx, current, desired, now, issuedKeys: [] };
  await freeIssuerValues(trx, diff.changes);
  // Sequential on purpose: the diff's order is the foreign-key-safe order.
  for (const change of diff.changes) await writeChange(context, change);
  if (diff.versionBumps.length > 0) {
    await trx
      .updateTable("licenses")
      .set({ version: sql`version + 1`, updated_at: now })
      .where("id", "in", diff.versionBumps)
      .execute();
  }
  return context.issuedKeys.sort((a, b) => compareText(a.kind, b.kind) || compareText(a.id, b.id));
}

async function writeChange(context: WriteContext, change: Change): Promise<void> {
  switch (change.kind) {
    case "account":
      return writeAccount(context, change);
    case "plan":
      return writePlan(context, change);
    case "license":
      return writeLicense(context, change);
    case "api_key":
      return writeApiKey(context, change);
    case "issuer":
      return writeIssuer(context, change);
    case "service_token":
      return writeServiceToken(context, change);
    case "route":
      return writeRoute(context, change);
  }
}

async function writeAccount({ trx, desired, now }: WriteContext, change: Change): Promise<void> {
  if (change.action === "delete") {
    await trx.deleteFrom("accounts").where("id", "=", change.id).execute();
    return;
  }
  const account = find(desired.accounts, (a) => a.id, change.id);
  if (change.action === "create") {
    await trx.insertInto("accounts").values({ ...account, created_at: now, updated_at: now }).execute();
  } else {
    await trx.updateTable("accounts").set({ name: account.name, updated_at: now }).where("id", "=", change.id).execute();
  }
}

async function writePlan({ trx, current, desired, now }: WriteContext, change: Change): Promise<void> {
  if (change.action === "delete") {
    // Its entitlements go with it (ON DELETE CASCADE); its licences were deleted before.
    await trx.deleteFrom("plans").where("name", "=", change.id).execute();
    return;
  }
  const plan = find(desired.plans, (p) => p.name, change.id);
  const row = { description: plan.description ?? null, updated_at: now };
  if (change.action === "create") {
    await trx.insertInto("plans").values({ name: plan.name, ...row, created_at: now }).execute();
  } else {
    await trx.updateTable("plans").set(row).where("name", "=", plan.name).execute();
  }
  const before: PlanRule | undefined = current.plans.find((p) => p.name === plan.name);
  await writeEntitlements(trx, { plan: plan.name }, before?.entitlements ?? [], plan.entitlements, now);
}

async function writeLicense({ trx, current, desired, now }: WriteContext, change: Change): Promise<void> {
  if (change.action === "delete") {
    // Overrides and any remaining keys cascade; declared keys cannot point here (validated).
    await trx.deleteFrom("licenses").where("id", "=", change.id).execute();
    return;
  }
  const license = find(desired.licenses, (l) => l.id, change.id);
  const row = licenseRow(license, now);
  if (change.action === "create") {
    await trx.insertInto("licenses").values({ id: license.id, ...row, created_at: now }).execute();
  } else {
    // The version grows once, with the other bumps, however many things changed.
    await trx.updateTable("licenses").set(row).where("id", "=", license.id).execute();
  }
  const before: LicenseRule | undefined = current.licenses.find((l) => l.id === license.id);
  await writeEntitlements(trx, { license_id: license.id }, before?.overrides ?? [], license.overrides, now);
}

function licenseRow(license: LicenseRule, now: Date) {
  return {
    account_id: license.account,
    plan: license.plan,
    status: license.status,
    valid_from: license.valid_from ?? null,
    valid_until: license.valid_until ?? null,
    environments: license.environments,
    updated_at: now,
  };
}

async function writeApiKey(context: WriteContext, change: Change): Promise<void> {
  const { trx, current, desired, now } = context;
  if (change.action === "delete") {
    await trx.deleteFrom("api_keys").where("id", "=", change.id).execute();
    return;
  }
  const key = find(desired.api_keys, (k) => k.id, change.id);
  if (change.action === "create") {
    context.issuedKeys.push(await insertApiKey(trx, key, now));
    return;
  }
  const before = find(current.api_keys, (k) => k.id, change.id);
  await trx
    .updateTable("api_keys")
    .set({
      license_id: key.license,
      scopes: key.scopes,
      expires_at: key.expires_at ?? null,
      // Revoking records the moment once; an already revoked key keeps its original time.
      ...(key.revoked !== before.revoked ? { revoked_at: key.revoked ? now : null } : {}),
      updated_at: now,
    })
    .where("id", "=", key.id)
    .execute();
}

/** Creates a key with a fresh secret; only the hash and prefix are written. */
async function insertApiKey(trx: Transaction<Database>, key: ApiKeyRule, now: Date): Promise<IssuedKey> {
  const { secret, prefix, hash } = generateApiKey();
  await trx
    .insertInto("api_keys")
    .values({
      id: key.id,
      license_id: key.license,
      prefix,
      secret_hash: hash,
      scopes: key.scopes,
      expires_at: key.expires_at ?? null,
      revoked_at: key.revoked ? now : null,
      created_at: now,
      updated_at: now,
    })
    .execute();
  return { kind: "api_key", id: key.id, licenseId: key.license, secret, prefix };
}

async function writeIssuer({ trx, desired, now }: WriteContext, change: Change): Promise<void> {
  if (change.action === "delete") {
    // Done before every other write by freeIssuerValues; nothing is left to delete here.
    return;
  }
  const issuer = find(desired.issuers, (i) => i.id, change.id);
  const row = issuerRow(issuer, now);
  if (change.action === "create") {
    await trx.insertInto("issuers").values({ id: issuer.id, ...row, created_at: now }).execute();
  } else {
    await trx.updateTable("issuers").set(row).where("id", "=", issuer.id).execute();
  }
}

function issuerRow(issuer: IssuerRule, now: Date) {
  return {
    issuer: issuer.issuer,
    jwks_url: issuer.jwks_url,
    audiences: issuer.audiences,
    algorithms: issuer.algorithms,
    leeway_seconds: issuer.leeway_seconds,
    license_claim: issuer.license_claim ?? null,
    account_claim: issuer.account_claim ?? null,
    roles_claim: issuer.roles_claim,
    updated_at: now,
  };
}

/**
 * `issuers.issuer` is unique and checked per statement, so an apply that moves an `iss` value
 * from one issuer to another (a rename, or a swap) would trip over itself. First delete the
 * pruned issuers, then park every `iss` value that changes on a placeholder no real `iss` can
 * equal (it contains a space); the later updates and creates then never collide.
 */
async function freeIssuerValues(trx: Transaction<Database>, changes: readonly Change[]): Promise<void> {
  const deleted = changes.filter((c) => c.kind === "issuer" && c.action === "delete").map((c) => c.id);
  if (deleted.length > 0) await trx.deleteFrom("issuers").where("id", "in", deleted).execute();
  const moving = changes.filter((c) => c.kind === "issuer" && c.action === "update" && c.fields.includes("issuer"));
  for (const change of moving) {
    await trx.updateTable("issuers").set({ issuer: `moving ${change.id}` }).where("id", "=", change.id).execute();
  }
}

/**
 * Declared issuers whose `iss` an issuer the apply keeps but the document does not declare
 * already has (only possible without prune): the unique column would reject the write with a
 * database error; this says what to do instead.
 */
function issuerConflicts(current: RulesDocument, desired: RulesDocument, prune: boolean): RuleIssue[] {
  if (prune) return [];
  const declared = new Set(desired.issuers.map((i) => i.id));
  const kept = new Map(current.issuers.filter((i) => !declared.has(i.id)).map((i) => [i.issuer, i.id]));
  const issues: RuleIssue[] = [];
  desired.issuers.forEach((issuer, i) => {
    const holder = kept.get(issuer.issuer);
    if (holder !== undefined) {
      issues.push({
        path: `issuers[${i}].issuer`,
        message: `"${issuer.issuer}" is already the issuer of "${holder}" in the database, which this document does not declare: declare or remove it, or apply with prune`,
      });
    }
  });
  return issues;
}

async function writeServiceToken(context: WriteContext, change: Change): Promise<void> {
  const { trx, current, desired, now } = context;
  if (change.action === "delete") {
    await trx.deleteFrom("service_tokens").where("id", "=", change.id).execute();
    return;
  }
  const token = find(desired.service_tokens, (t) => t.id, change.id);
  if (change.action === "create") {
    context.issuedKeys.push(await insertServiceToken(trx, token, now));
    return;
  }
  const before = find(current.service_tokens, (t) => t.id, change.id);
  await trx
    .updateTable("service_tokens")
    .set({
      rights: token.rights,
      expires_at: token.expires_at ?? null,
      // As for API keys: the revocation time is recorded once.
      ...(token.revoked !== before.revoked ? { revoked_at: token.revoked ? now : null } : {}),
      updated_at: now,
    })
    .where("id", "=", token.id)
    .execute();
}

async function writeRoute({ trx, desired, now }: WriteContext, change: Change): Promise<void> {
  if (change.action === "delete") {
    await trx.deleteFrom("routes").where("id", "=", change.id).execute();
    return;
  }
  const route = find(desired.routes, (r) => r.id, change.id);
  const values = { method: route.method ?? "*", path_prefix: route.path_prefix, feature: route.feature, cost: route.cost };
  if (change.action === "create") {
    await trx.insertInto("routes").values({ id: route.id, ...values, created_at: now, updated_at: now }).execute();
  } else {
    await trx.updateTable("routes").set({ ...values, updated_at: now }).where("id", "=", route.id).execute();
  }
}

/** Creates a service token with a fresh secret; only the hash and prefix are written. */
async function insertServiceToken(trx: Transaction<Database>, token: ServiceTokenRule, now: Date): Promise<IssuedKey> {
  const { secret, prefix, hash } = generateServiceToken();
  await trx
    .insertInto("service_tokens")
    .values({
      id: token.id,
      prefix,
      secret_hash: hash,
      rights: token.rights,
      expires_at: token.expires_at ?? null,
      revoked_at: token.revoked ? now : null,
      created_at: now,
      updated_at: now,
    })
    .execute();
  return { kind: "service_token", id: token.id, licenseId: "", secret, prefix };
}

type EntitlementOwner = { plan: string; license_id?: never } | { license_id: string; plan?: never };

/** Makes one owner's entitlement rows match `desired`, keeping the rows (and ids) that stay. */
async function writeEntitlements(
  trx: Transaction<Database>,
  owner: EntitlementOwner,
  current: readonly EntitlementRule[],
  desired: readonly EntitlementRule[],
  now: Date,
): Promise<void> {
  const { insert, update, remove } = diffEntitlements(current, desired);
  const ownerColumn = owner.plan !== undefined ? "plan" : "license_id";
  const ownerId = owner.plan ?? owner.license_id;
  for (const { feature, kind } of remove) {
    await trx
      .deleteFrom("entitlements")
      .where(ownerColumn, "=", ownerId)
      .where("feature", "=", feature)
      .where("kind", "=", kind)
      .execute();
  }
  for (const entitlement of update) {
    await trx
      .updateTable("entitlements")
      .set({ ...entitlementColumns(entitlement), updated_at: now })
      .where(ownerColumn, "=", ownerId)
      .where("feature", "=", entitlement.feature)
      .where("kind", "=", entitlement.kind)
      .execute();
  }
  if (insert.length > 0) {
    await trx
      .insertInto("entitlements")
      .values(
        insert.map((e) => ({
          plan: owner.plan ?? null,
          license_id: owner.license_id ?? null,
          feature: e.feature,
          ...entitlementColumns(e),
          created_at: now,
          updated_at: now,
        })),
      )
      .execute();
  }
}

function entitlementColumns(e: EntitlementRule) {
  return {
    kind: e.kind,
    limit: e.limit ?? null,
    period: e.period ?? null,
    burst: e.burst ?? null,
    overage: e.overage,
    failure_mode: e.failure_mode,
    roles: e.roles,
    unit_price: e.unit_price ?? null,
    scaling: e.scaling === undefined ? null : JSON.stringify(e.scaling),
  };
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The item with this id; the diff only names ids it found, so a miss is a bug here. */
function find<T>(items: readonly T[], idOf: (item: T) => string, id: string): T {
  const item = items.find((candidate) => idOf(candidate) === id);
  if (item === undefined) throw new Error(`rules apply: ${id} is missing from the document it was diffed from`);
  return item;
}
