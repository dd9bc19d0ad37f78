/**
 * A specialized protobuf codec for Envoy's ext_authz call (`/envoy.service.auth.v3.Authorization/Check`)
 * on the gRPC port, used instead of protobuf-es's generic, reflection-driven toBinary/fromBinary.
 *
 * Contract, decoding: `decodeEnvoyCheckRequest(b)` reads only what the authorizer reads
 * (`EnvoyAuthzInput`: attributes.request.http.{method, path, headers, header_map} and
 * attributes.context_extensions) and equals protobuf-es's `fromBinary(CheckRequestSchema, b)` on
 * those fields, including protobuf's merge rules: a sub-message that appears twice is merged, a
 * repeated string/bytes scalar keeps the last value, map entries are added in wire order with
 * the last duplicate key winning (at the position of its first appearance, as with any object),
 * and a map entry without key or value gets "". Maps are plain objects like protobuf-es's, with
 * `__proto__` stored as an own property. Every other field, at every level (source and
 * destination peers, TLS session, metadata, the request's host, body and the rest), is skipped
 * by its wire type without looking inside.
 * Malformed input throws an Error, which the transport answers with INVALID_ARGUMENT:
 * - everywhere protobuf-es throws while parsing the fields read here: a truncated varint, a
 *   length past the end, a tag that is not a uint32 varint of at most 5 bytes, field number 0,
 *   wire type 6 or 7, invalid UTF-8 in a string that is read (proto3 strings are validated,
 *   as protobuf-es does);
 * - and, deliberately stricter, where protobuf-es is lenient: a field read here arriving with
 *   the wrong wire type (protobuf-es reinterprets its bytes), a field running past the end of
 *   its enclosing message, groups (wire types 3 and 4; proto3 has none and Envoy never sends
 *   them), a varint longer than 10 bytes. Envoy never sends any of these; answering
 *   INVALID_ARGUMENT beats authorizing on reinterpreted bytes.
 * Deliberately more lenient: a skipped field is not parsed, so malformed content inside it
 * (invalid UTF-8 in `host`, a broken `source.address`) is accepted where protobuf-es rejects the
 * whole request, as a lazily parsed field would be; and a skipped field with an unexpected wire
 * type is skipped by the wire type it has (as protoc's parsers treat it: as an unknown field),
 * where protobuf-es reinterprets its bytes by the schema. Nothing reads those fields, and
 * whether the rest of Envoy's message is well-formed is no part of the licensing decision.
 * The result is a view, not a protobuf-es message: it is never re-encoded, and its `$typeName`
 * only says which message it was read from.
 *
 * Contract, encoding: `encodeEnvoyCheckResponse(m)` is byte for byte `toBinary(CheckResponseSchema,
 * m)` for every message (fields in field-number order, map and Struct entries in `Object.keys`
 * order, proto3 zero values left out). It specializes the shapes toCheckResponse builds
 * (ext-authz.ts): status code and message, OK and denied HTTP responses with header options,
 * headers to remove, and a dynamic_metadata Struct whose values are strings. Anything else
 * (status details, query parameters, `append`, non-string Struct values, unknown fields, a wrong
 * `$typeName`, values of the wrong type) falls back to toBinary, so it encodes, or throws,
 * exactly as protobuf-es does. `encodeEnvoyAnswer(answer)` writes the same bytes as
 * `encodeEnvoyCheckResponse(toCheckResponse(answer))` straight from the authorizer's answer,
 * without the message; the gRPC port answers that way (createExtAuthzGrpcHandler).
 *
 * test/unit/ext-authz-codec.test.ts checks both directions against protobuf-es on generated
 * messages, truncations and corruptions.
 *
 * Why: with protobuf-es, decoding Envoy's CheckRequest (a header map) cost about 7.8 µs, building
 * the CheckResponse with create() 2.3 µs and encoding it (its Struct) 15.7 µs, more than half of
 * the ~45 µs an ext_authz Check costs. Measured on the bench's request (extAuthzMix, 385 bytes,
 * nine headers), this decoder takes about a third of fromBinary's time and the encoder about a
 * quarter of toBinary's; what remains of decoding is mostly V8 adding nine fresh keys to the
 * header object, which protobuf-es pays too.
 */
import { isAscii as isAsciiBytes, isUtf8 } from "node:buffer";
import { toBinary, type JsonObject, type Message } from "@bufbuild/protobuf";
import { HeaderValueOption_HeaderAppendAction, type HeaderValue, type HeaderValueOption } from "../gen/envoy/config/core/v3/base_pb.js";
import {
  CheckResponseSchema,
  type CheckResponse,
  type DeniedHttpResponse,
  type OkHttpResponse,
} from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import type { Status } from "../gen/google/rpc/status_pb.js";
import type { AllowAnswer, AuthzAnswer, DenyAnswer, HeaderPair } from "./http-mapping.js";
import { setMapEntry, WireReader } from "../server/wire-reader.js";

// ---------------------------------------------------------------------------------------------
// What the authorizer reads
// ---------------------------------------------------------------------------------------------

/** envoy.config.core.v3.HeaderValue: one header of `header_map` (encode_raw_headers). */
export interface EnvoyHeaderValue {
  readonly key: string;
  readonly value: string;
  /** The value as raw bytes; Envoy sends these instead of `value` with encode_raw_headers. */
  readonly rawValue: Uint8Array;
}

/** The parts of AttributeContext.HttpRequest the authorizer reads. */
export interface EnvoyHttpInput {
  readonly method: string;
  /** Path and query string. */
  readonly path: string;
  /** Lower-case header names; a plain object like protobuf-es maps (look up own keys only). */
  readonly headers: { readonly [name: string]: string };
  /**
   * The decoder's fast lookup, answering as an own-key lookup in `headers` does, without
   * building that object (absent on a protobuf-es message).
   */
  readonly lookupHeader?: ((name: string) => string | undefined) | undefined;
  readonly headerMap?: { readonly headers: readonly EnvoyHeaderValue[] } | undefined;
}

/**
 * The parts of an Envoy CheckRequest the authorizer reads: what `decodeEnvoyCheckRequest`
 * yields, and what a full protobuf-es `CheckRequest` (the Connect port) satisfies structurally.
 */
export interface EnvoyAuthzInput {
  readonly attributes?:
    | {
        readonly request?: { readonly http?: EnvoyHttpInput | undefined } | undefined;
        /** The route's per-route settings (`feature`, `cost`, ...); a plain object. */
        readonly contextExtensions: { readonly [key: string]: string };
      }
    | undefined;
}

/** What the decoder returns: the authorizer's input, marked with the message it was read from. */
export type DecodedEnvoyCheckRequest = EnvoyAuthzInput & Message<"envoy.service.auth.v3.CheckRequest">;

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

interface MutableAttributes {
  request: { http: HttpView | undefined } | undefined;
  contextExtensions: Record<string, string>;
}

/**
 * AttributeContext.HttpRequest as decoded. The `headers` map's entries are validated while
 * decoding but kept as byte ranges: the authorizer looks up a handful of names, and building an
 * object of every header (a string per key and value, and a property per key) was the largest
 * part of decoding. `headers` builds that object on first use, exactly as protobuf-es would have.
 */
class HttpView implements EnvoyHttpInput {
  method = "";
  path = "";
  headerMap: { headers: EnvoyHeaderValue[] } | undefined = undefined;
  /**
   * Per entry in wire order: key start, key end, value start, value end (-1: absent, ""), in
   * the first `rangeCount` slots. Sized for ten headers up front, so a typical request's entries
   * take one allocation rather than a growing array's several.
   */
  readonly ranges: number[] = new Array<number>(40);
  rangeCount = 0;
  #headers: Record<string, string> | undefined;

  constructor(private readonly reader: Reader) {}

  get headers(): { readonly [name: string]: string } {
    if (this.#headers === undefined) {
      const headers: Record<string, string> = {};
      const ranges = this.ranges;
      for (let i = 0; i < this.rangeCount; i += 4) {
        setMapEntry(headers, this.text(ranges[i] as number, ranges[i + 1] as number), this.text(ranges[i + 2] as number, ranges[i + 3] as number));
      }
      this.#headers = headers;
    }
    return this.#headers;
  }

  /** The value of the last entry whose key is `name`, as the map's own key `name` holds it. */
  readonly lookupHeader = (name: string): string | undefined => {
    // Key bytes are compared with the name's UTF-16 units: exact for ASCII names only.
    if (this.#headers !== undefined || !isAsciiText(name)) return ownValue(this.headers, name);
    const buf = this.reader.buf;
    const ranges = this.ranges;
    // The last duplicate wins, as in the map.
    entries: for (let i = this.rangeCount - 4; i >= 0; i -= 4) {
      const start = ranges[i] as number;
      const length = start === -1 ? 0 : (ranges[i + 1] as number) - start;
      if (length !== name.length) continue;
      for (let j = 0; j < length; j++) if (buf[start + j] !== name.charCodeAt(j)) continue entries;
      return this.text(ranges[i + 2] as number, ranges[i + 3] as number);
    }
    return undefined;
  };

  private text(start: number, end: number): string {
    return start === -1 ? "" : this.reader.validatedText(start, end);
  }
}

/** The empty raw_value most headers have; zero-length, so sharing it cannot leak data. */
const NO_BYTES = new Uint8Array(0);

/** Bit n set: field number n is read at that level (all are below 32). */
const enum Read {
  CheckRequest = 1 << 1,
  AttributeContext = (1 << 4) | (1 << 10),
  Request = 1 << 2,
  HttpRequest = (1 << 2) | (1 << 3) | (1 << 4) | (1 << 13),
  HeaderMap = 1 << 1,
  HeaderValue = (1 << 1) | (1 << 2) | (1 << 3),
  MapEntry = (1 << 1) | (1 << 2),
}

/**
 * Inputs up to this size are decoded to Latin-1 text once, and ASCII strings are cut from that
 * text (one native call per request instead of one per string, about 100 ns each). Larger ones
 * (a request body sent along) decode each string on its own, so skipped bytes are never copied.
 */
const WHOLE_TEXT_MAX_BYTES = 16 * 1024;

class Reader extends WireReader {
  /** The input as Latin-1 text, made on first use; for ASCII bytes, character i is byte i. */
  private text: string | undefined;
  /** Bytes in [asciiStart, asciiEnd) are known to be ASCII: their strings need no UTF-8 check. */
  private asciiStart = 0;
  private asciiEnd = 0;

  /** A field's tag, `(number << 3) | wireType`, validated as protobuf-es validates it. */
  tag(): number {
    // One-byte tags (fields 1 to 15) are nearly all of them.
    if (this.pos < this.end) {
      const byte = this.buf[this.pos] as number;
      if (byte >= 0x08 && byte < 0x80 && (byte & 7) < 6) {
        this.pos++;
        return byte;
      }
    }
    const start = this.pos;
    const tag = this.varint();
    if (this.pos - start > 5 || tag > 0xffff_ffff) throw new Error("illegal tag: varint overflows uint32");
    if (tag < 8) throw new Error("illegal tag: field number 0");
    if ((tag & 7) > 5) throw new Error(`illegal tag: wire type ${tag & 7}`);
    return tag;
  }

  /** A proto3 string: UTF-8, validated (protobuf-es rejects invalid UTF-8 in proto3 strings). */
  string(): string {
    const end = this.lengthEnd();
    const start = this.pos;
    this.pos = end;
    if (start === end) return "";
    if (this.knownAscii(start, end)) return this.ascii(start, end);
    const buf = this.buf;
    let i = start;
    while (i < end && (buf[i] as number) < 0x80) i++;
    if (i === end) return this.ascii(start, end);
    if (!isUtf8(buf.subarray(start, end))) throw new Error("string field is not valid UTF-8");
    return buf.toString("utf8", start, end);
  }

  /**
   * Notes whether bytes [start, end) are all ASCII (one native check, vectorized), so the
   * strings inside need no byte-by-byte scan. Envoy's HTTP attributes nearly always are.
   */
  noteAscii(start: number, end: number): void {
    if (end - start >= 64 && isAsciiBytes(this.buf.subarray(start, end))) {
      this.asciiStart = start;
      this.asciiEnd = end;
    }
  }

  private knownAscii(start: number, end: number): boolean {
    return start >= this.asciiStart && end <= this.asciiEnd;
  }

  /**
   * Validates a string field as string() does and skips it, returning where its bytes start
   * (they end at `pos`); validatedText makes the string later, if it is wanted.
   */
  stringStart(): number {
    const end = this.lengthEnd();
    const start = this.pos;
    this.pos = end;
    if (this.knownAscii(start, end)) return start;
    const buf = this.buf;
    let i = start;
    while (i < end && (buf[i] as number) < 0x80) i++;
    if (i < end && !isUtf8(buf.subarray(start, end))) throw new Error("string field is not valid UTF-8");
    return start;
  }

  /** The text of bytes stringStart() validated. */
  validatedText(start: number, end: number): string {
    if (start === end) return "";
    if (this.knownAscii(start, end)) return this.ascii(start, end);
    const buf = this.buf;
    let i = start;
    while (i < end && (buf[i] as number) < 0x80) i++;
    return i === end ? this.ascii(start, end) : buf.toString("utf8", start, end);
  }

  private ascii(start: number, end: number): string {
    if (this.end > WHOLE_TEXT_MAX_BYTES) return this.buf.toString("latin1", start, end);
    this.text ??= this.buf.toString("latin1");
    return this.text.substring(start, end);
  }

  /** A bytes field: a view of the input, as protobuf-es returns. */
  bytes(): Uint8Array {
    const end = this.lengthEnd();
    const start = this.pos;
    this.pos = end;
    return start === end ? NO_BYTES : new Uint8Array(this.buf.buffer, this.buf.byteOffset + start, end - start);
  }

  /**
   * Skips a field not read at this level. `read` has a bit set for each field number this level
   * reads: such a field arriving here has a wire type other than the one it is read with.
   */
  skip(tag: number, read: number, where: string): void {
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field < 32 && (read >>> field) & 1) throw new Error(`${where} field ${field} has wire type ${wireType}, not 2`);
    // tag() refused wire types 6 and 7; 3 and 4 start and end groups.
    if (wireType === 3 || wireType === 4) throw new Error(`${where} field ${field} has wire type ${wireType} (a group), which is not supported`);
    this.skipValue(wireType);
  }

  /** Throws unless the fields of a sub-message ended exactly at its length. */
  checkEnd(end: number, where: string): void {
    if (this.pos !== end) throw new Error(`a field of ${where} runs past the end of ${where}`);
  }
}

function isAsciiText(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) >= 0x80) return false;
  return true;
}

function ownValue(map: { readonly [key: string]: string }, key: string): string | undefined {
  return Object.hasOwn(map, key) ? map[key] : undefined;
}

/**
 * Decodes an Envoy CheckRequest into what the authorizer reads (see the module comment).
 *
 * @throws Error when the bytes are not a well-formed CheckRequest where it reads them.
 */
export function decodeEnvoyCheckRequest(bytes: Uint8Array): DecodedEnvoyCheckRequest {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new Reader(buf);
  let attributes: MutableAttributes | undefined;
  while (r.pos < r.end) {
    const tag = r.tag();
    if (tag === 0x0a) attributes = readAttributes(r, attributes ?? { request: undefined, contextExtensions: {} });
    else r.skip(tag, Read.CheckRequest, "CheckRequest");
  }
  return { $typeName: "envoy.service.auth.v3.CheckRequest", attributes };
}

/** AttributeContext, merged into `into` as a repeated sub-message is. */
function readAttributes(r: Reader, into: MutableAttributes): MutableAttributes {
  const end = r.lengthEnd();
  while (r.pos < end) {
    const tag = r.tag();
    if (tag === 0x22) into.request = readRequest(r, into.request ?? { http: undefined });
    else if (tag === 0x52) readStringMapEntry(r, into.contextExtensions);
    else r.skip(tag, Read.AttributeContext, "AttributeContext");
  }
  r.checkEnd(end, "AttributeContext");
  return into;
}

/** AttributeContext.Request: only `http`. */
function readRequest(r: Reader, into: { http: HttpView | undefined }): { http: HttpView | undefined } {
  const end = r.lengthEnd();
  while (r.pos < end) {
    const tag = r.tag();
    if (tag === 0x12) into.http = readHttp(r, into.http ?? new HttpView(r));
    else r.skip(tag, Read.Request, "AttributeContext.Request");
  }
  r.checkEnd(end, "AttributeContext.Request");
  return into;
}

function readHttp(r: Reader, into: HttpView): HttpView {
  const end = r.lengthEnd();
  r.noteAscii(r.pos, end);
  while (r.pos < end) {
    const tag = r.tag();
    switch (tag) {
      case 0x12:
        into.method = r.string();
        break;
      case 0x1a:
        readHeaderEntry(r, into);
        break;
      case 0x22:
        into.path = r.string();
        break;
      case 0x6a:
        into.headerMap = readHeaderMap(r, into.headerMap ?? { headers: [] });
        break;
      default:
        r.skip(tag, Read.HttpRequest, "AttributeContext.HttpRequest");
    }
  }
  r.checkEnd(end, "AttributeContext.HttpRequest");
  return into;
}

/** envoy.config.core.v3.HeaderMap: its repeated `headers`, appended in wire order. */
function readHeaderMap(r: Reader, into: { headers: EnvoyHeaderValue[] }): { headers: EnvoyHeaderValue[] } {
  const end = r.lengthEnd();
  while (r.pos < end) {
    const tag = r.tag();
    if (tag === 0x0a) into.headers.push(readHeaderValue(r));
    else r.skip(tag, Read.HeaderMap, "HeaderMap");
  }
  r.checkEnd(end, "HeaderMap");
  return into;
}

function readHeaderValue(r: Reader): EnvoyHeaderValue {
  const end = r.lengthEnd();
  let key = "";
  let value = "";
  let rawValue: Uint8Array = NO_BYTES;
  while (r.pos < end) {
    const tag = r.tag();
    if (tag === 0x0a) key = r.string();
    else if (tag === 0x12) value = r.string();
    else if (tag === 0x1a) rawValue = r.bytes();
    else r.skip(tag, Read.HeaderValue, "HeaderValue");
  }
  r.checkEnd(end, "HeaderValue");
  return { key, value, rawValue };
}

/** One entry of the headers map, validated and kept as byte ranges (see HttpView). */
function readHeaderEntry(r: Reader, into: HttpView): void {
  const end = r.lengthEnd();
  let keyStart = -1;
  let keyEnd = -1;
  let valueStart = -1;
  let valueEnd = -1;
  while (r.pos < end) {
    const tag = r.tag();
    if (tag === 0x0a) {
      keyStart = r.stringStart();
      keyEnd = r.pos;
    } else if (tag === 0x12) {
      valueStart = r.stringStart();
      valueEnd = r.pos;
    } else r.skip(tag, Read.MapEntry, "map entry");
  }
  r.checkEnd(end, "a map entry");
  const at = into.rangeCount;
  const ranges = into.ranges;
  ranges[at] = keyStart;
  ranges[at + 1] = keyEnd;
  ranges[at + 2] = valueStart;
  ranges[at + 3] = valueEnd;
  into.rangeCount = at + 4;
}

/** One map<string, string> entry (key = 1, value = 2; either may be missing: ""). */
function readStringMapEntry(r: Reader, map: Record<string, string>): void {
  const end = r.lengthEnd();
  let key = "";
  let value = "";
  while (r.pos < end) {
    const tag = r.tag();
    if (tag === 0x0a) key = r.string();
    else if (tag === 0x12) value = r.string();
    else r.skip(tag, Read.MapEntry, "map entry");
  }
  r.checkEnd(end, "a map entry");
  setMapEntry(map, key, value);
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

// One pass over the message, checking as it goes that the shape is one this encoder covers,
// into a reused scratch buffer. A sub-message's length precedes its body but is known only
// after it: one byte is reserved, and the rare body of 128 bytes or more is moved right to make
// room for a longer length.

/** Thrown for a shape the encoder does not cover; the caller falls back to toBinary. */
const NOT_COVERED: unique symbol = Symbol("not covered");

function notCovered(): never {
  throw NOT_COVERED;
}

/**
 * `toBinary(CheckResponseSchema, m)`, byte for byte, without reflection for the shapes
 * toCheckResponse builds; other shapes go through toBinary itself.
 *
 * @throws exactly what toBinary throws (e.g. a status code that is not an int32).
 */
export function encodeEnvoyCheckResponse(m: CheckResponse): Uint8Array {
  return encodeSpecialized(m) ?? toBinary(CheckResponseSchema, m);
}

/**
 * The specialized encoding alone: undefined when `m` has a shape it does not cover (exported so
 * tests can tell which path a message takes).
 */
export function encodeSpecialized(m: CheckResponse): Uint8Array | undefined {
  const w = new Writer();
  try {
    writeResponse(w, m);
  } catch (err) {
    if (err === NOT_COVERED) return undefined;
    throw err;
  }
  return w.copy();
}

/**
 * The bytes of `toCheckResponse(answer)` (ext-authz.ts), written straight from the authorizer's
 * answer without building the message: the gRPC port's ext_authz answers this way. Undefined
 * when a value is outside what the writer covers (a status that is not an int32); the caller
 * then encodes the message. test/unit/ext-authz-codec.test.ts holds the two equal on generated
 * answers.
 */
export function encodeEnvoyAnswer(answer: AuthzAnswer): Uint8Array | undefined {
  const w = new Writer();
  try {
    if (answer.allow) writeAllowAnswer(w, answer);
    else writeDenyAnswer(w, answer);
  } catch (err) {
    if (err === NOT_COVERED) return undefined;
    throw err;
  }
  return w.copy();
}

/** Bytes of a varint holding the non-negative integer `n`. */
function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Room every sub-message start and scalar field may use without checking: tags, an int32. */
const HEADROOM = 16;
/** The scratch buffer is kept for the next call up to this size (a larger response gets its own). */
const SCRATCH_MAX_BYTES = 64 * 1024;
/**
 * Shared by every call: encoding is synchronous and calls nothing that encodes, so one call
 * never sees another's bytes. The bytes returned are a copy.
 */
let scratch = Buffer.allocUnsafe(4096);

class Writer {
  buf = scratch;
  pos = 0;

  /** Makes room for `bytes` more bytes. */
  ensure(bytes: number): void {
    if (this.pos + bytes <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + bytes) size *= 2;
    const grown = Buffer.allocUnsafe(size);
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
    if (size <= SCRATCH_MAX_BYTES) scratch = grown;
  }

  varint(n: number): void {
    const buf = this.buf;
    while (n >= 0x80) {
      buf[this.pos++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 128);
    }
    buf[this.pos++] = n;
  }

  /** Starts a sub-message: its tag and a one-byte length placeholder. Returns where its body starts. */
  begin(tag: number): number {
    this.ensure(HEADROOM);
    this.buf[this.pos] = tag;
    this.pos += 2;
    return this.pos;
  }

  /** Ends the sub-message whose body starts at `start`: writes its length before it. */
  end(start: number): void {
    const length = this.pos - start;
    if (length < 0x80) {
      this.buf[start - 1] = length;
      return;
    }
    const extra = varintSize(length) - 1;
    this.ensure(extra);
    this.buf.copyWithin(start + extra, start, this.pos);
    this.pos = start - 1;
    this.varint(length);
    this.pos += length;
  }

  /** An int32 or open enum field with implicit presence (absent when 0). */
  int32Field(tag: number, value: unknown): void {
    if (typeof value !== "number" || !Number.isInteger(value) || value < -0x8000_0000 || value > 0x7fff_ffff) notCovered();
    if (value === 0) return;
    this.ensure(HEADROOM);
    const buf = this.buf;
    buf[this.pos++] = tag;
    if (value > 0) {
      this.varint(value);
      return;
    }
    // Negative: two's complement over 64 bits, 10 bytes, as protobuf writes an int32.
    let low = value >>> 0;
    for (let i = 0; i < 4; i++) {
      buf[this.pos++] = (low & 0x7f) | 0x80;
      low >>>= 7;
    }
    buf[this.pos++] = (low & 0x0f) | 0xf0;
    for (let i = 0; i < 4; i++) buf[this.pos++] = 0xff;
    buf[this.pos++] = 0x01;
  }

  /** A bool field with implicit presence (absent when false). */
  boolField(tag: number, value: unknown): void {
    if (typeof value !== "boolean") notCovered();
    if (!value) return;
    this.ensure(2);
    this.buf[this.pos++] = tag;
    this.buf[this.pos++] = 1;
  }

  /** A string field, always written (repeated strings, map keys and values). */
  stringField(tag: number, text: unknown): void {
    if (typeof text !== "string") notCovered();
    this.ensure(6 + text.length * 3);
    this.buf[this.pos++] = tag;
    this.string(text);
  }

  /** A string field with implicit presence: absent when empty. */
  optionalStringField(tag: number, text: unknown): void {
    if (text !== "") this.stringField(tag, text);
  }

  /** Length and UTF-8 bytes (lone surrogates as U+FFFD, as TextEncoder writes them); room is ensured. */
  private string(text: string): void {
    const buf = this.buf;
    const length = text.length;
    const start = this.pos;
    // Presumed ASCII: as many bytes as characters.
    this.varint(length);
    const pos = this.pos;
    let i = 0;
    while (i < length) {
      const code = text.charCodeAt(i);
      if (code >= 0x80) break;
      buf[pos + i++] = code;
    }
    if (i === length) {
      this.pos = pos + length;
      return;
    }
    this.pos = start;
    const byteLength = Buffer.byteLength(text, "utf8");
    this.varint(byteLength);
    this.pos += buf.write(text, this.pos, byteLength, "utf8");
  }

  /** The bytes written, in a buffer of their own (the scratch buffer is reused by the next call). */
  copy(): Uint8Array {
    // allocUnsafe slices Node's pooled slab: far cheaper than a fresh Uint8Array per response.
    const bytes = Buffer.allocUnsafe(this.pos);
    this.buf.copy(bytes, 0, 0, this.pos);
    return bytes;
  }

  /** A bytes field with implicit presence: absent when empty. */
  bytesField(tag: number, value: unknown): void {
    if (!(value instanceof Uint8Array)) notCovered();
    if (value.length === 0) return;
    this.ensure(6 + value.length);
    this.buf[this.pos++] = tag;
    this.varint(value.length);
    this.buf.set(value, this.pos);
    this.pos += value.length;
  }
}

/**
 * A message the encoder covers: the expected `$typeName` (toBinary throws otherwise) and no
 * unknown fields to copy.
 */
function expectMessage(m: unknown, typeName: string): asserts m is object {
  if (typeof m !== "object" || m === null) notCovered();
  const message = m as { readonly $typeName?: unknown; readonly $unknown?: unknown };
  if (message.$typeName !== typeName || message.$unknown !== undefined) notCovered();
}

/**
 * A singular message field as toBinary sees it: set when it is an own property with a value
 * (an inherited one is not written).
 */
function presentField<T extends object, K extends keyof T>(m: T, key: K): T[K] | undefined {
  const value = m[key];
  return value !== undefined && Object.hasOwn(m, key) ? value : undefined;
}

function isList(value: unknown): value is readonly unknown[] {
  return Array.isArray(value);
}

// Fields in field-number order, as toBinary writes them; every tag is one byte.

function writeResponse(w: Writer, m: CheckResponse): void {
  expectMessage(m, "envoy.service.auth.v3.CheckResponse");
  const status = presentField(m, "status");
  if (status !== undefined) writeStatus(w, status);
  const response: CheckResponse["httpResponse"] | undefined = m.httpResponse;
  if (typeof response !== "object" || response === null) notCovered();
  if (response.case === "deniedResponse") writeDenied(w, response.value);
  else if (response.case === "okResponse") writeOk(w, response.value);
  else if (response.case !== undefined) notCovered();
  const metadata = presentField(m, "dynamicMetadata");
  if (metadata !== undefined) writeStruct(w, 0x22, metadata);
}

/** google.rpc.Status (field 1): code, message; details are not covered. */
function writeStatus(w: Writer, m: Status): void {
  expectMessage(m, "google.rpc.Status");
  if (!isList(m.details) || m.details.length > 0) notCovered();
  const start = w.begin(0x0a);
  w.int32Field(0x08, m.code);
  w.optionalStringField(0x12, m.message);
  w.end(start);
}

/** DeniedHttpResponse (field 2): status, headers, body. */
function writeDenied(w: Writer, m: DeniedHttpResponse | undefined): void {
  expectMessage(m, "envoy.service.auth.v3.DeniedHttpResponse");
  const start = w.begin(0x12);
  const status = presentField(m, "status");
  if (status !== undefined) {
    expectMessage(status, "envoy.type.v3.HttpStatus");
    const statusStart = w.begin(0x0a);
    w.int32Field(0x08, status.code);
    w.end(statusStart);
  }
  writeHeaderOptions(w, 0x12, m.headers);
  w.optionalStringField(0x1a, m.body);
  w.end(start);
}

/**
 * OkHttpResponse (field 3): headers (2), dynamic_metadata (3), headers_to_remove (5),
 * response_headers_to_add (6); query parameters (7, 8) are not covered.
 */
function writeOk(w: Writer, m: OkHttpResponse | undefined): void {
  expectMessage(m, "envoy.service.auth.v3.OkHttpResponse");
  const queryToSet: unknown = m.queryParametersToSet;
  const queryToRemove: unknown = m.queryParametersToRemove;
  if (!isList(queryToSet) || queryToSet.length > 0 || !isList(queryToRemove) || queryToRemove.length > 0) notCovered();
  const start = w.begin(0x1a);
  writeHeaderOptions(w, 0x12, m.headers);
  const metadata = presentField(m, "dynamicMetadata");
  if (metadata !== undefined) writeStruct(w, 0x1a, metadata);
  const toRemove: unknown = m.headersToRemove;
  if (!isList(toRemove)) notCovered();
  for (const name of toRemove) w.stringField(0x2a, name);
  writeHeaderOptions(w, 0x32, m.responseHeadersToAdd);
  w.end(start);
}

/**
 * Repeated HeaderValueOption: header (1), append_action (3), keep_empty_value (4). The
 * deprecated `append` (2, a BoolValue) is not covered; toCheckResponse never sets it.
 */
function writeHeaderOptions(w: Writer, tag: number, options: readonly HeaderValueOption[]): void {
  if (!isList(options)) notCovered();
  for (const option of options) {
    expectMessage(option, "envoy.config.core.v3.HeaderValueOption");
    if (option.append !== undefined) notCovered();
    const start = w.begin(tag);
    const header = presentField(option, "header");
    if (header !== undefined) writeHeaderValue(w, header);
    w.int32Field(0x18, option.appendAction);
    w.boolField(0x20, option.keepEmptyValue);
    w.end(start);
  }
}

/** HeaderValue (field 1 of an option): key, value, raw_value. */
function writeHeaderValue(w: Writer, m: HeaderValue): void {
  expectMessage(m, "envoy.config.core.v3.HeaderValue");
  const start = w.begin(0x0a);
  w.optionalStringField(0x0a, m.key);
  w.optionalStringField(0x12, m.value);
  w.bytesField(0x1a, m.rawValue);
  w.end(start);
}

/**
 * google.protobuf.Struct, which protobuf-es holds as a JsonObject: covered when every value is
 * a string. Each entry, in Object.keys order, is a map entry {key = 1, value = 2}, the value a
 * google.protobuf.Value with string_value (3), written even when empty (a oneof member).
 */
function writeStruct(w: Writer, tag: number, json: JsonObject): void {
  if (typeof json !== "object" || json === null || Array.isArray(json)) notCovered();
  const start = w.begin(tag);
  for (const key of Object.keys(json)) writeStringEntry(w, key, json[key]);
  w.end(start);
}

/** One Struct field whose Value is a string_value. */
function writeStringEntry(w: Writer, key: string, text: unknown): void {
  const entry = w.begin(0x0a);
  w.stringField(0x0a, key);
  const value = w.begin(0x12);
  w.stringField(0x1a, text);
  w.end(value);
  w.end(entry);
}

// Straight from an answer: the fields toCheckResponse would set, in the order writeResponse
// writes them.

const OVERWRITE = HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD;

/** status {code 0} (an empty Status), ok_response, dynamic_metadata {license_id, plan, decision_id}. */
function writeAllowAnswer(w: Writer, answer: AllowAnswer): void {
  w.end(w.begin(0x0a));
  const ok = w.begin(0x1a);
  writeHeaderPairs(w, 0x12, answer.upstreamHeaders);
  for (const name of answer.clearedUpstreamHeaders) w.stringField(0x2a, name);
  if (answer.credentialHeader !== undefined) w.stringField(0x2a, answer.credentialHeader);
  writeHeaderPairs(w, 0x32, answer.responseHeaders);
  w.end(ok);
  const metadata = w.begin(0x22);
  writeStringEntry(w, "license_id", answer.licenseId);
  writeStringEntry(w, "plan", answer.plan);
  writeStringEntry(w, "decision_id", answer.decisionId);
  w.end(metadata);
}

/** status {code, "REASON: message"}, denied_response {status {code}, headers, body}. */
function writeDenyAnswer(w: Writer, answer: DenyAnswer): void {
  const status = w.begin(0x0a);
  w.int32Field(0x08, answer.grpcCode);
  w.optionalStringField(0x12, `${answer.reason}: ${answer.message}`);
  w.end(status);
  const denied = w.begin(0x12);
  const httpStatus = w.begin(0x0a);
  w.int32Field(0x08, answer.status);
  w.end(httpStatus);
  writeHeaderPairs(w, 0x12, answer.headers);
  w.optionalStringField(0x1a, answer.body);
  w.end(denied);
}

/** Each pair as a HeaderValueOption {header {key, value}, append_action OVERWRITE_IF_EXISTS_OR_ADD}. */
function writeHeaderPairs(w: Writer, tag: number, pairs: readonly HeaderPair[]): void {
  for (const pair of pairs) {
    const option = w.begin(tag);
    const header = w.begin(0x0a);
    w.optionalStringField(0x0a, pair.name);
    w.optionalStringField(0x12, pair.value);
    w.end(header);
    w.int32Field(0x18, OVERWRITE);
    w.end(option);
  }
}
