/**
 * Validation of Report events, each on its own: a bad event becomes a `Rejected` naming its
 * index and field, the others go on. Credentials resolve through the same IdentityResolver and
 * caches as Check, so a key or token that Check would refuse cannot report usage either.
 *
 * What is not checked: the licence's status and validity window. Usage that happened while a
 * licence was active may be reported after it was suspended or expired, and must be billed.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import type { UsageEvent } from "../gen/licensing/v1/licensing_pb.js";
import type { HeaderSource, IdentityResolver, Resolution } from "../licensing/identity.js";
import { MISS, type LoadingCache } from "../licensing/loading-cache.js";
import type { LicenseSnapshot } from "../licensing/snapshot.js";
import { andThen, type MaybePromise } from "../licensing/sync.js";
import { quotaTargetOf } from "./reservations.js";
import type { PreparedEvent } from "./usage-store.js";

export const MAX_EVENTS_PER_REPORT = 1000;
export const MAX_EVENT_ID_LENGTH = 128;
const MAX_OPERATION_ID_LENGTH = 128;
/** quantity's upper bound as a BigInt, made once rather than per event. */
const MAX_QUANTITY = BigInt(Number.MAX_SAFE_INTEGER);
const MAX_ATTRIBUTES = 64;
const MAX_ATTRIBUTE_KEY_LENGTH = 128;
const MAX_ATTRIBUTE_VALUE_LENGTH = 1024;

export interface EventValidationDeps {
  readonly resolveIdentity: IdentityResolver;
  readonly licenses: LoadingCache<string, LicenseSnapshot>;
  readonly accountLicenses: LoadingCache<string, string>;
  /** Oldest occurred_at accepted, as an age in ms (default 35 days). */
  readonly maxEventAgeMs: number;
  /** Furthest occurred_at in the future accepted, ms (clock skew; default 5 minutes). */
  readonly maxFutureSkewMs: number;
}

export type EventOutcome = { readonly event: PreparedEvent } | { readonly rejected: string };

/**
 * Validates and resolves one event; never throws for a bad event (it is an outcome). `headers`
 * reads the call's metadata (a service token for license_id credentials).
 */
export function prepareEvent(
  deps: EventValidationDeps,
  event: UsageEvent,
  index: number,
  headers: HeaderSource,
  nowMs: number,
): MaybePromise<EventOutcome> {
  const field = (name: string, message: string): EventOutcome => ({ rejected: `events[${index}].${name}: ${message}` });
  if (event.id === "") return field("id", "is required");
  if (event.id.length > MAX_EVENT_ID_LENGTH) return field("id", `must be at most ${MAX_EVENT_ID_LENGTH} characters`);
  if (!storable(event.id)) return field("id", NOT_STORABLE);
  if (event.credential.case === undefined) return field("credential", "one of api_key, bearer_token, license_token or license_id is required");
  if (event.feature === "") return field("feature", "is required");
  if (event.quantity < 0n) return field("quantity", "must be at least 0");
  if (event.quantity > MAX_QUANTITY) return field("quantity", `must be at most ${Number.MAX_SAFE_INTEGER}`);
  if (event.operationId.length > MAX_OPERATION_ID_LENGTH) return field("operation_id", `must be at most ${MAX_OPERATION_ID_LENGTH} characters`);
  if (!storable(event.operationId)) return field("operation_id", NOT_STORABLE);
  const attributesProblem = checkAttributes(event.attributes);
  if (attributesProblem !== undefined) return field("attributes", attributesProblem);
  const occurredAtMs = event.occurredAt === undefined ? nowMs : timestampMs(event.occurredAt);
  if (occurredAtMs > nowMs + deps.maxFutureSkewMs) return field("occurred_at", `is more than ${deps.maxFutureSkewMs} ms in the future`);
  if (occurredAtMs < nowMs - deps.maxEventAgeMs) return field("occurred_at", `is older than the ${deps.maxEventAgeMs} ms accepted`);

  return andThen(resolveLicence(deps, event, headers, nowMs), (found): EventOutcome => {
    if (typeof found === "string") return field("credential", found);
    if (!found.entitlements.has(event.feature)) return field("feature", `"${event.feature}" is not entitled by licence ${found.licenseId}`);
    return {
      event: {
        id: event.id,
        licenseId: found.licenseId,
        feature: event.feature,
        quantity: Number(event.quantity),
        occurredAtMs,
        receivedAtMs: nowMs,
        attributes: event.attributes,
        operationId: event.operationId,
        quota: quotaTargetOf(found, event.feature, occurredAtMs),
      },
    };
  });
}

/** The licence snapshot the event's credential names, or why there is none (a message). */
function resolveLicence(
  deps: EventValidationDeps,
  event: UsageEvent,
  headers: HeaderSource,
  nowMs: number,
): MaybePromise<LicenseSnapshot | string> {
  let resolution: MaybePromise<Resolution>;
  try {
    resolution = deps.resolveIdentity(event.credential, headers, nowMs);
  } catch (error) {
    // license_id without a service token: UNAUTHENTICATED for a Check, a rejection here.
    if (error instanceof ConnectError) return error.rawMessage;
    throw error;
  }
  const licence = andThen(resolution, (r): MaybePromise<LicenseSnapshot | string> => {
    if (r.denied !== undefined) return r.denied.message;
    if (r.identity.licenseId !== undefined) return snapshotOf(deps, r.identity.licenseId);
    const accountId = r.identity.accountId ?? "";
    return andThen(cached(deps.accountLicenses, accountId), (licenseId) =>
      licenseId === undefined ? `account ${accountId} has no single active licence` : snapshotOf(deps, licenseId),
    );
  });
  return catchRejection(licence);
}

function snapshotOf(deps: EventValidationDeps, licenseId: string): MaybePromise<LicenseSnapshot | string> {
  return andThen(cached(deps.licenses, licenseId), (snapshot) => snapshot ?? `licence ${licenseId} does not exist`);
}

function cached<K, V>(cache: LoadingCache<K, V>, key: K): MaybePromise<V | undefined> {
  const hit = cache.peek(key);
  return hit === MISS ? cache.get(key) : hit;
}

/** A failed load (Postgres unreachable, nothing cached) or a thrown ConnectError rejects the event. */
function catchRejection(value: MaybePromise<LicenseSnapshot | string>): MaybePromise<LicenseSnapshot | string> {
  if (!(value instanceof Promise)) return value;
  return value.catch((error: unknown) => {
    if (error instanceof ConnectError) return error.rawMessage;
    return "the licence could not be looked up (the licence database is unreachable and it is not cached); retry";
  });
}

function checkAttributes(attributes: Readonly<Record<string, string>>): string | undefined {
  const keys = Object.keys(attributes);
  if (keys.length > MAX_ATTRIBUTES) return `at most ${MAX_ATTRIBUTES} entries`;
  for (const key of keys) {
    if (key.length > MAX_ATTRIBUTE_KEY_LENGTH) return `keys must be at most ${MAX_ATTRIBUTE_KEY_LENGTH} characters`;
    const value = attributes[key] ?? "";
    if (value.length > MAX_ATTRIBUTE_VALUE_LENGTH) return `values must be at most ${MAX_ATTRIBUTE_VALUE_LENGTH} characters`;
    if (!storable(key)) return `keys ${NOT_STORABLE}`;
    if (!storable(value)) return `values ${NOT_STORABLE}`;
  }
  return undefined;
}

const NOT_STORABLE = "must not contain U+0000 or an unpaired surrogate";

/**
 * Whether PostgreSQL can hold the text as it is: text and jsonb refuse U+0000, and an unpaired
 * surrogate has no UTF-8 form (it would be stored as U+FFFD, so two different event ids could
 * become one). Refusing such an event names the field; letting it through would fail its whole
 * batch at the database, over and over, as if the database were down.
 */
function storable(text: string): boolean {
  return text.isWellFormed() && !text.includes("\u0000");
}
