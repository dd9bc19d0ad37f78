/**
 * A specialized protobuf codec for the hottest messages, CheckRequest and CheckResponse, used by
 * the gRPC port instead of protobuf-es's generic, reflection-driven toBinary/fromBinary.
 *
 * Contract: `encodeCheckResponse(m)` is byte-for-byte what `toBinary(CheckResponseSchema, m)`
 * produces, `createCheckAnswerEncoder(ttl)(a)` what the CheckResponse built from answer `a`
 * encodes to, and `decodeCheckRequest(b)` equals `fromBinary(CheckRequestSchema, b)` for every
 * known field (unknown fields are skipped rather than kept: the server never re-encodes a
 * request). test/unit/check-codec.test.ts checks all three on generated inputs. Malformed input
 * throws, which the transport answers with INVALID_ARGUMENT.
 *
 * Why: encoding and decoding were about a fifth of the CPU a Check costs beyond the bare
 * transport (bench/RESULTS.md); this codec does the same work without reflection or
 * intermediate writers, and the answer encoder without the intermediate message either.
 */
import { isUtf8 } from "node:buffer";
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { Decision as WireDecision, type CheckRequest, type CheckResponse } from "../gen/licensing/v1/licensing_pb.js";
import { setMapEntry, WireReader } from "../server/wire-reader.js";
import { cacheTtlMsOf, createResponseBuilder, retryAfterMsOf, wholeMs, type CheckAnswer } from "./check-response.js";
import type { LicenseSnapshot } from "./snapshot.js";

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/** The largest int64 a JavaScript number holds exactly; a constant, not a BigInt made per call. */
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Bytes of a varint holding the unsigned 32-bit or safe non-negative integer `n`. */
function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** An int64 as protobuf writes it: negative values as their 64-bit two's complement. */
function int64Size(value: bigint): number {
  if (value >= 0n && value <= MAX_SAFE) return varintSize(Number(value));
  return value < 0n ? 10 : bigVarintSize(value);
}

function bigVarintSize(value: bigint): number {
  let size = 1;
  while (value >= 0x80n) {
    value >>= 7n;
    size++;
  }
  return size;
}

class Writer {
  readonly bytes: Uint8Array;
  pos = 0;

  constructor(size: number) {
    // allocUnsafe slices Node's pooled slab: far cheaper than a fresh Uint8Array per response.
    // Every byte is written below (the encoder checks it wrote exactly `size`).
    this.bytes = Buffer.allocUnsafe(size);
  }

  varint(n: number): void {
    while (n >= 0x80) {
      this.bytes[this.pos++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 128);
    }
    this.bytes[this.pos++] = n;
  }

  int64(value: bigint): void {
    if (value >= 0n && value <= MAX_SAFE) {
      this.varint(Number(value));
      return;
    }
    let v = BigInt.asUintN(64, value);
    while (v >= 0x80n) {
      this.bytes[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.bytes[this.pos++] = Number(v);
  }

  /** An int32: negative values sign-extended to 10 bytes, as protobuf does. */
  int32(n: number): void {
    if (n >= 0) this.varint(n);
    else this.int64(BigInt(n));
  }

  string(text: string, byteLength: number): void {
    this.varint(byteLength);
    if (byteLength === text.length) {
      // ASCII: one byte per character, no encoder needed (locals: no field write per byte).
      const bytes = this.bytes;
      let pos = this.pos;
      for (let i = 0; i < byteLength; i++) bytes[pos++] = text.charCodeAt(i);
      this.pos = pos;
    } else {
      this.pos += Buffer.from(this.bytes.buffer, this.bytes.byteOffset + this.pos, byteLength).write(text, "utf8");
    }
  }
}

function int32Size(n: number): number {
  return n >= 0 ? varintSize(n) : 10;
}

/** Seconds/nanos messages (Timestamp, Duration): their encoded body length. */
function secondsNanosSize(m: Timestamp | Duration): number {
  return (m.seconds !== 0n ? 1 + int64Size(m.seconds) : 0) + (m.nanos !== 0 ? 1 + int32Size(m.nanos) : 0);
}

function writeSecondsNanos(w: Writer, tag: number, m: Timestamp | Duration, size: number): void {
  w.bytes[w.pos++] = tag;
  w.varint(size);
  if (m.seconds !== 0n) {
    w.bytes[w.pos++] = 0x08;
    w.int64(m.seconds);
  }
  if (m.nanos !== 0) {
    w.bytes[w.pos++] = 0x10;
    w.int32(m.nanos);
  }
}

// Tags: (field number << 3) | wire type; every field here is below 16, so one byte.
const enum Tag {
  Decision = 0x08,
  Reason = 0x10,
  Message = 0x1a,
  LicenseId = 0x22,
  Limit = 0x28,
  Remaining = 0x30,
  ResetsAt = 0x3a,
  RetryAfter = 0x42,
  CacheTtl = 0x4a,
  DecisionId = 0x52,
  PolicyVersion = 0x58,
  DepletesAt = 0x62,
  Plan = 0x6a,
  AccountId = 0x72,
}

export function encodeCheckResponse(m: CheckResponse): Uint8Array {
  const messageBytes = Buffer.byteLength(m.message);
  const licenseIdBytes = Buffer.byteLength(m.licenseId);
  const decisionIdBytes = Buffer.byteLength(m.decisionId);
  const planBytes = Buffer.byteLength(m.plan);
  const accountIdBytes = Buffer.byteLength(m.accountId);
  const resetsAtSize = m.resetsAt === undefined ? -1 : secondsNanosSize(m.resetsAt);
  const retryAfterSize = m.retryAfter === undefined ? -1 : secondsNanosSize(m.retryAfter);
  const cacheTtlSize = m.cacheTtl === undefined ? -1 : secondsNanosSize(m.cacheTtl);
  const depletesAtSize = m.depletesAt === undefined ? -1 : secondsNanosSize(m.depletesAt);

  let size = 0;
  if (m.decision !== 0) size += 1 + int32Size(m.decision);
  if (m.reason !== 0) size += 1 + int32Size(m.reason);
  if (messageBytes > 0) size += 1 + varintSize(messageBytes) + messageBytes;
  if (licenseIdBytes > 0) size += 1 + varintSize(licenseIdBytes) + licenseIdBytes;
  if (m.limit !== undefined) size += 1 + int64Size(m.limit);
  if (m.remaining !== undefined) size += 1 + int64Size(m.remaining);
  if (resetsAtSize >= 0) size += 1 + varintSize(resetsAtSize) + resetsAtSize;
  if (retryAfterSize >= 0) size += 1 + varintSize(retryAfterSize) + retryAfterSize;
  if (cacheTtlSize >= 0) size += 1 + varintSize(cacheTtlSize) + cacheTtlSize;
  if (decisionIdBytes > 0) size += 1 + varintSize(decisionIdBytes) + decisionIdBytes;
  if (m.policyVersion !== 0n) size += 1 + int64Size(m.policyVersion);
  if (depletesAtSize >= 0) size += 1 + varintSize(depletesAtSize) + depletesAtSize;
  if (planBytes > 0) size += 1 + varintSize(planBytes) + planBytes;
  if (accountIdBytes > 0) size += 1 + varintSize(accountIdBytes) + accountIdBytes;

  const w = new Writer(size);
  if (m.decision !== 0) {
    w.bytes[w.pos++] = Tag.Decision;
    w.int32(m.decision);
  }
  if (m.reason !== 0) {
    w.bytes[w.pos++] = Tag.Reason;
    w.int32(m.reason);
  }
  if (messageBytes > 0) {
    w.bytes[w.pos++] = Tag.Message;
    w.string(m.message, messageBytes);
  }
  if (licenseIdBytes > 0) {
    w.bytes[w.pos++] = Tag.LicenseId;
    w.string(m.licenseId, licenseIdBytes);
  }
  if (m.limit !== undefined) {
    w.bytes[w.pos++] = Tag.Limit;
    w.int64(m.limit);
  }
  if (m.remaining !== undefined) {
    w.bytes[w.pos++] = Tag.Remaining;
    w.int64(m.remaining);
  }
  if (m.resetsAt !== undefined) writeSecondsNanos(w, Tag.ResetsAt, m.resetsAt, resetsAtSize);
  if (m.retryAfter !== undefined) writeSecondsNanos(w, Tag.RetryAfter, m.retryAfter, retryAfterSize);
  if (m.cacheTtl !== undefined) writeSecondsNanos(w, Tag.CacheTtl, m.cacheTtl, cacheTtlSize);
  if (decisionIdBytes > 0) {
    w.bytes[w.pos++] = Tag.DecisionId;
    w.string(m.decisionId, decisionIdBytes);
  }
  if (m.policyVersion !== 0n) {
    w.bytes[w.pos++] = Tag.PolicyVersion;
    w.int64(m.policyVersion);
  }
  if (m.depletesAt !== undefined) writeSecondsNanos(w, Tag.DepletesAt, m.depletesAt, depletesAtSize);
  if (planBytes > 0) {
    w.bytes[w.pos++] = Tag.Plan;
    w.string(m.plan, planBytes);
  }
  if (accountIdBytes > 0) {
    w.bytes[w.pos++] = Tag.AccountId;
    w.string(m.accountId, accountIdBytes);
  }
  if (w.pos !== size) throw new Error(`CheckResponse encoding wrote ${w.pos} of ${size} bytes`);
  return w.bytes;
}

// ---------------------------------------------------------------------------------------------
// Encoding an answer straight to bytes
// ---------------------------------------------------------------------------------------------

/**
 * The gRPC port's Check encoder: `encode(answer)` is byte for byte
 * `encodeCheckResponse(createResponseBuilder(cacheTtlMs)(answer))`, written from the answer's
 * numbers and strings without building the message, its Timestamps, Durations and BigInts
 * (test/unit/check-codec.test.ts compares the two on generated answers). Answers whose numbers
 * are not non-negative safe integers (never seen from the engine, but allowed by the types) go
 * through the message.
 */
export function createCheckAnswerEncoder(cacheTtlMs: number): (answer: CheckAnswer) => Uint8Array {
  const respond = createResponseBuilder(cacheTtlMs);
  return (answer) => encodeAnswer(answer, cacheTtlMs) ?? encodeCheckResponse(respond(answer));
}

/** A number the fast path writes as a plain varint: what BigInt(n) would make, unsigned and exact. */
function plain(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** Body length of a Timestamp or Duration of `ms` (a plain number of whole milliseconds). */
function msMessageSize(ms: number): number {
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms % 1000) * 1_000_000;
  return (seconds !== 0 ? 1 + varintSize(seconds) : 0) + (nanos !== 0 ? 1 + varintSize(nanos) : 0);
}

/** A Timestamp or Duration of `ms`, as timestampOfMs and durationOfMs (check-response.ts) build it. */
function writeMsMessage(w: Writer, tag: number, ms: number, size: number): void {
  w.bytes[w.pos++] = tag;
  w.bytes[w.pos++] = size; // at most 14 bytes (seconds below 2^53 / 1000, nanos below 10^9): one varint byte
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms % 1000) * 1_000_000;
  if (seconds !== 0) {
    w.bytes[w.pos++] = 0x08;
    w.varint(seconds);
  }
  if (nanos !== 0) {
    w.bytes[w.pos++] = 0x10;
    w.varint(nanos);
  }
}

function stringFieldSize(byteLength: number): number {
  return byteLength > 0 ? 1 + varintSize(byteLength) + byteLength : 0;
}

function writeStringField(w: Writer, tag: number, text: string, byteLength: number): void {
  if (byteLength === 0) return;
  w.bytes[w.pos++] = tag;
  w.string(text, byteLength);
}

/**
 * A snapshot's fields as written: the licence id (field 4) and the plan and account (13, 14),
 * encoded once per snapshot (snapshots are immutable; a change makes a new one) rather than
 * measured and copied character by character on every answer.
 */
interface SnapshotFields {
  readonly head: Buffer;
  readonly tail: Buffer;
}

const snapshotFields = new WeakMap<LicenseSnapshot, SnapshotFields>();

function fieldsOf(snapshot: LicenseSnapshot): SnapshotFields {
  let fields = snapshotFields.get(snapshot);
  if (fields === undefined) {
    fields = { head: stringFields([Tag.LicenseId, snapshot.licenseId]), tail: stringFields([Tag.Plan, snapshot.plan], [Tag.AccountId, snapshot.accountId]) };
    snapshotFields.set(snapshot, fields);
  }
  return fields;
}

/** String fields as protobuf writes them (empty ones left out), in one Buffer of their own. */
function stringFields(...fields: readonly (readonly [Tag, string])[]): Buffer {
  const lengths = fields.map(([, text]) => Buffer.byteLength(text));
  const w = new Writer(lengths.reduce((sum, length) => sum + stringFieldSize(length), 0));
  fields.forEach(([tag, text], i) => writeStringField(w, tag, text, lengths[i] as number));
  // Not from allocUnsafe's shared pool: kept as long as the snapshot, it would pin the pool's slab.
  return Buffer.from(w.bytes);
}

function writeBytes(w: Writer, bytes: Buffer): void {
  w.bytes.set(bytes, w.pos);
  w.pos += bytes.length;
}

/** The answer's bytes, or undefined when a number needs the message's BigInt arithmetic. */
function encodeAnswer(answer: CheckAnswer, cacheTtlMs: number): Uint8Array | undefined {
  const { verdict, snapshot, status } = answer;
  const reason = verdict.reason;
  const ttlMs = wholeMs(cacheTtlMsOf(answer, cacheTtlMs));
  if (!plain(reason) || !plain(ttlMs)) return undefined;
  const messageBytes = Buffer.byteLength(verdict.message);
  const decisionIdBytes = Buffer.byteLength(answer.decisionId);
  const ttlSize = msMessageSize(ttlMs);
  let size = 2 + (reason !== 0 ? 1 + varintSize(reason) : 0) + stringFieldSize(messageBytes);
  size += 2 + ttlSize + stringFieldSize(decisionIdBytes);

  let fields: SnapshotFields | undefined;
  let version = 0;
  if (snapshot !== undefined) {
    version = snapshot.version;
    if (!plain(version)) return undefined;
    fields = fieldsOf(snapshot);
    size += fields.head.length + fields.tail.length;
    if (version !== 0) size += 1 + varintSize(version);
  }

  // Times in ms and their message sizes; a size of -1: the field is absent.
  let resetsAtMs = 0;
  let resetsAtSize = -1;
  let retryAfterMs = 0;
  let retryAfterSize = -1;
  let depletesAtMs = 0;
  let depletesAtSize = -1;
  if (status !== undefined) {
    if (!plain(status.limit) || !plain(status.remaining)) return undefined;
    size += 2 + varintSize(status.limit) + varintSize(status.remaining);
    if (status.resetsAtMs !== null) {
      resetsAtMs = status.resetsAtMs;
      if (!plain(resetsAtMs)) return undefined;
      resetsAtSize = msMessageSize(resetsAtMs);
      size += 2 + resetsAtSize;
    }
    const retryMs = retryAfterMsOf(answer);
    if (retryMs !== undefined) {
      retryAfterMs = wholeMs(retryMs);
      if (!plain(retryAfterMs)) return undefined;
      retryAfterSize = msMessageSize(retryAfterMs);
      size += 2 + retryAfterSize;
    }
    if (answer.depletesAtMs !== undefined) {
      depletesAtMs = answer.depletesAtMs;
      if (!plain(depletesAtMs)) return undefined;
      depletesAtSize = msMessageSize(depletesAtMs);
      size += 2 + depletesAtSize;
    }
  }

  const w = new Writer(size);
  w.bytes[w.pos++] = Tag.Decision;
  w.bytes[w.pos++] = verdict.allow ? WireDecision.ALLOW : WireDecision.DENY;
  if (reason !== 0) {
    w.bytes[w.pos++] = Tag.Reason;
    w.varint(reason);
  }
  writeStringField(w, Tag.Message, verdict.message, messageBytes);
  if (fields !== undefined) writeBytes(w, fields.head);
  if (status !== undefined) {
    w.bytes[w.pos++] = Tag.Limit;
    w.varint(status.limit);
    w.bytes[w.pos++] = Tag.Remaining;
    w.varint(status.remaining);
    if (resetsAtSize >= 0) writeMsMessage(w, Tag.ResetsAt, resetsAtMs, resetsAtSize);
    if (retryAfterSize >= 0) writeMsMessage(w, Tag.RetryAfter, retryAfterMs, retryAfterSize);
  }
  writeMsMessage(w, Tag.CacheTtl, ttlMs, ttlSize);
  writeStringField(w, Tag.DecisionId, answer.decisionId, decisionIdBytes);
  if (version !== 0) {
    w.bytes[w.pos++] = Tag.PolicyVersion;
    w.varint(version);
  }
  if (depletesAtSize >= 0) writeMsMessage(w, Tag.DepletesAt, depletesAtMs, depletesAtSize);
  if (fields !== undefined) writeBytes(w, fields.tail);
  if (w.pos !== size) throw new Error(`CheckResponse encoding wrote ${w.pos} of ${size} bytes`);
  return w.bytes;
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

class Reader extends WireReader {
  get done(): boolean {
    return this.pos >= this.end;
  }

  /** A varint as a signed 64-bit integer (int64). */
  int64(): bigint {
    const start = this.pos;
    const small = this.varint();
    if (small <= Number.MAX_SAFE_INTEGER && this.pos - start < 8) return BigInt(small);
    let value = 0n;
    for (let i = this.pos - 1; i >= start; i--) value = (value << 7n) | BigInt((this.buf[i] as number) & 0x7f);
    return BigInt.asIntN(64, value);
  }

  /**
   * A proto3 string: invalid UTF-8 throws, as in protobuf-es. toString replaces each invalid
   * sequence with U+FFFD, so only a string holding one (rare) needs the bytes validated.
   */
  string(): string {
    const end = this.lengthEnd();
    const text = this.buf.toString("utf8", this.pos, end);
    if (text.includes("\uFFFD") && !isUtf8(this.buf.subarray(this.pos, end))) throw new Error("string field is not valid UTF-8");
    this.pos = end;
    return text;
  }
}

const CREDENTIAL_CASES = [undefined, "apiKey", "bearerToken", "licenseToken", "licenseId"] as const;

export function decodeCheckRequest(buf: Buffer): CheckRequest {
  const request: CheckRequest = {
    $typeName: "licensing.v1.CheckRequest",
    credential: { case: undefined },
    feature: "",
    environment: "",
    operationId: "",
    instanceId: "",
    attributes: {},
    dryRun: false,
  };
  const r = new Reader(buf);
  while (!r.done) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field >= 1 && field <= 4 && wireType === 2) {
      const credentialCase = CREDENTIAL_CASES[field] as "apiKey" | "bearerToken" | "licenseToken" | "licenseId";
      request.credential = { case: credentialCase, value: r.string() };
      continue;
    }
    switch (tag) {
      case 0x2a:
        request.feature = r.string();
        break;
      case 0x30:
        request.quantity = r.int64();
        break;
      case 0x3a:
        request.environment = r.string();
        break;
      case 0x42:
        request.operationId = r.string();
        break;
      case 0x4a:
        request.instanceId = r.string();
        break;
      case 0x52:
        readAttribute(r, request.attributes);
        break;
      case 0x58:
        request.dryRun = r.varint() !== 0;
        break;
      default:
        if (field === 0) throw new Error("illegal field number 0");
        r.skipValue(wireType);
    }
  }
  return request;
}

/** One map<string,string> entry (a message with key = 1 and value = 2). */
function readAttribute(r: Reader, attributes: Record<string, string>): void {
  const end = r.lengthEnd();
  let key = "";
  let value = "";
  while (r.pos < end) {
    const tag = r.varint();
    if (tag === 0x0a) key = r.string();
    else if (tag === 0x12) value = r.string();
    else r.skipValue(tag & 7);
  }
  if (r.pos !== end) throw new Error("map entry runs past its length");
  setMapEntry(attributes, key, value);
}
