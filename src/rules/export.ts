/**
 * Export: the database's licensing state as a rules document that Apply accepts and that,
 * applied back to the same database, changes nothing.
 */
import type { Kysely } from "kysely";
import { Document, isScalar, visit } from "yaml";
import type { Database } from "../store/schema.js";
import { readRules } from "./read.js";
import {
  ISSUER_DEFAULTS,
  type ApiKeyRule,
  type EntitlementRule,
  type IssuerRule,
  type LicenseRule,
  type PlanRule,
  type RulesDocument,
  type RouteRule,
  type ServiceTokenRule,
} from "./types.js";
import { deepEqual } from "./diff.js";

export type RulesFormat = "yaml" | "json";

/**
 * The current state, normalized and sorted by id/name. Keys and service tokens carry no secret
 * (none is stored).
 */
export function exportRules(db: Kysely<Database>): Promise<RulesDocument> {
  return readRules(db);
}

/**
 * Renders a normalized document as text, deterministically: fields in documented order,
 * optional fields omitted when they hold their default (so the output reads like a hand-written
 * file), and every top-level list always present.
 */
export function formatRules(doc: RulesDocument, format: RulesFormat): string {
  const plain = toPlainDocument(doc);
  return format === "json" ? `${JSON.stringify(plain, null, 2)}\n` : toYaml(plain);
}

/** YAML with lists of plain values in flow style (`roles: [admin, analyst]`), as people write them. */
function toYaml(plain: Plain): string {
  const doc = new Document(plain);
  visit(doc, {
    Seq(_, node) {
      if (node.items.every((item) => isScalar(item))) node.flow = true;
    },
  });
  return doc.toString({ lineWidth: 0, flowCollectionPadding: false });
}

type Plain = Record<string, unknown>;

/** The document as plain data with defaults left out. */
export function toPlainDocument(doc: RulesDocument): Plain {
  return {
    version: doc.version,
    accounts: doc.accounts.map((a) => ({ id: a.id, name: a.name })),
    plans: doc.plans.map(plainPlan),
    licenses: doc.licenses.map(plainLicense),
    api_keys: doc.api_keys.map(plainApiKey),
    issuers: doc.issuers.map(plainIssuer),
    service_tokens: doc.service_tokens.map(plainServiceToken),
    routes: doc.routes.map(plainRoute),
  };
}

function plainPlan(plan: PlanRule): Plain {
  return compact({
    name: plan.name,
    description: plan.description,
    entitlements: nonEmpty(plan.entitlements.map(plainEntitlement)),
  });
}

function plainLicense(license: LicenseRule): Plain {
  return compact({
    id: license.id,
    account: license.account,
    plan: license.plan,
    status: license.status === "active" ? undefined : license.status,
    valid_from: license.valid_from,
    valid_until: license.valid_until,
    environments: nonEmpty(license.environments),
    overrides: nonEmpty(license.overrides.map(plainEntitlement)),
  });
}

function plainApiKey(key: ApiKeyRule): Plain {
  return compact({
    id: key.id,
    license: key.license,
    scopes: nonEmpty(key.scopes),
    expires_at: key.expires_at,
    revoked: key.revoked ? true : undefined,
  });
}

function plainIssuer(issuer: IssuerRule): Plain {
  return compact({
    id: issuer.id,
    issuer: issuer.issuer,
    jwks_url: issuer.jwks_url,
    audiences: issuer.audiences,
    algorithms: deepEqual(issuer.algorithms, ISSUER_DEFAULTS.algorithms) ? undefined : issuer.algorithms,
    leeway_seconds: issuer.leeway_seconds === ISSUER_DEFAULTS.leeway_seconds ? undefined : issuer.leeway_seconds,
    license_claim: issuer.license_claim,
    account_claim: issuer.account_claim,
    roles_claim: issuer.roles_claim === ISSUER_DEFAULTS.roles_claim ? undefined : issuer.roles_claim,
  });
}

function plainRoute(route: RouteRule): Plain {
  return compact({
    id: route.id,
    method: route.method,
    path_prefix: route.path_prefix,
    feature: route.feature,
    cost: route.cost === 1 ? undefined : route.cost,
  });
}

function plainServiceToken(token: ServiceTokenRule): Plain {
  return compact({
    id: token.id,
    rights: token.rights,
    expires_at: token.expires_at,
    revoked: token.revoked ? true : undefined,
  });
}

function plainEntitlement(e: EntitlementRule): Plain {
  return compact({
    feature: e.feature,
    kind: e.kind,
    limit: e.limit,
    period: e.period,
    burst: e.burst,
    overage: e.overage === "block" ? undefined : e.overage,
    failure_mode: e.failure_mode === "fail_closed" ? undefined : e.failure_mode,
    unit_price: e.unit_price,
    roles: nonEmpty(e.roles),
    scaling: e.scaling === undefined ? undefined : compact({ ...e.scaling }),
  });
}

function nonEmpty<T>(items: readonly T[]): readonly T[] | undefined {
  return items.length === 0 ? undefined : items;
}

/** Drops undefined-valued keys, keeping the order of the others. */
function compact(object: Plain): Plain {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}
