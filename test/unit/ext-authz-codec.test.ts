/**
 * The ext_authz codec against protobuf-es. Requests: generated Envoy CheckRequests (merged
 * duplicates, odd map entries, unknown and skipped fields at every level), their truncations and
 * corruptions, decoded by ours, by protobuf-es with the real schema, and by protobuf-es with a
 * pruned schema that declares only the fields we read (the oracle for "protobuf-es throws while
 * parsing the fields we read"). Responses: generated answers and messages, encoded by ours and by
 * toBinary, byte for byte.
 */
import { create, createFileRegistry, fromBinary, toBinary, type DescMessage, type JsonObject } from "@bufbuild/protobuf";
import {
  AnySchema,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuthzDeps, RouteSetting } from "../../src/envoy/authorizer.js";
import {
  decodeEnvoyCheckRequest,
  encodeEnvoyCheckResponse,
  encodeSpecialized,
  encodeEnvoyAnswer,
  type EnvoyAuthzInput,
} from "../../src/envoy/ext-authz-codec.js";
import { createAuthorizationBinding, createExtAuthzGrpcHandler, EXT_AUTHZ_CHECK_PATH, proxiedRequestOf, toCheckResponse } from "../../src/envoy/ext-authz.js";
import type { AllowAnswer, AuthzAnswer, DenyAnswer, HeaderPair } from "../../src/envoy/http-mapping.js";
import {
  HeaderValueOption_HeaderAppendAction,
  HeaderValueOptionSchema,
  type HeaderValueOption,
} from "../../src/gen/envoy/config/core/v3/base_pb.js";
import {
  AttributeContext_HttpRequestSchema,
  AttributeContext_PeerSchema,
  AttributeContext_RequestSchema,
  AttributeContextSchema,
  type AttributeContext_Peer,
} from "../../src/gen/envoy/service/auth/v3/attribute_context_pb.js";
import {
  CheckRequestSchema,
  CheckResponseSchema,
  DeniedHttpResponseSchema,
  file_envoy_service_auth_v3_external_auth,
  OkHttpResponseSchema,
  type CheckResponse,
} from "../../src/gen/envoy/service/auth/v3/external_auth_pb.js";
import { StatusSchema } from "../../src/gen/google/rpc/status_pb.js";
import { createGrpcServer, type GrpcServer } from "../../src/server/grpc-server.js";
import { createHealthRegistry } from "../../src/server/health.js";
import { rawClient, rawUnary, recordingLogger as serverLogger } from "../server/support.js";
import { envoyRequest, GOOD_KEY, NOW_MS, recordingLogger, ROUTES, scriptedCheck } from "../envoy/support.js";

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/** A small deterministic generator (xorshift), so failures reproduce. */
function random(seed: number) {
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x1_0000_0000;
  };
  const int = (below: number): number => Math.floor(next() * below);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)] as T;
  const chance = (p: number): boolean => next() < p;
  return { next, int, pick, chance };
}
type Random = ReturnType<typeof random>;

const TEXTS = ["", "a", "GET", "/v1/reports?page=2", "ünïcödé ✓", "\ufeffbom", "\ud800lone", "日本語", "😀", "x".repeat(200), "a,b"];
/** Header and map keys, including ones that name Object.prototype members. */
const NAMES = [
  ":authority",
  ":method",
  ":path",
  "x-api-key",
  "authorization",
  "user-agent",
  "accept",
  "",
  "__proto__",
  "constructor",
  "toString",
  "hasOwnProperty",
  "0",
  "42",
  "ünï",
  "X-Mixed-Case",
  "feature",
  "cost",
];
const SETTINGS: readonly string[] = ["feature", "cost", "environment", "credential", "__proto__", "constructor", "toString"];
/** Names looked up that no generated request has. */
const ABSENT = ["absent", "valueOf", "__defineGetter__", "x-api-key2"];

function text(r: Random): string {
  if (r.chance(0.8)) return r.pick(TEXTS);
  let s = "";
  for (let i = r.int(8); i > 0; i--) s += String.fromCodePoint(r.pick([0x41, 0x7f, 0x80, 0x7ff, 0x800, 0xfffd, 0x10000, 0x10ffff, 0x2c]));
  return s;
}

function randomBytes(r: Random, max: number): Uint8Array {
  const bytes = new Uint8Array(r.int(max + 1));
  for (let i = 0; i < bytes.length; i++) bytes[i] = r.int(256);
  return bytes;
}

/** A map as a plain object; defineProperty, so `__proto__` is an own key like any other. */
function record(r: Random, max: number, keys: readonly string[] = NAMES): Record<string, string> {
  const map: Record<string, string> = {};
  for (let i = r.int(max + 1); i > 0; i--) {
    Object.defineProperty(map, r.pick(keys), { value: text(r), writable: true, enumerable: true, configurable: true });
  }
  return map;
}

// Wire helpers, for what protobuf-es never writes (duplicates, odd map entries, unknown fields).

function varint(n: bigint): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, n);
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

function tag(field: number, wireType: number): number[] {
  return varint(BigInt(field * 8 + wireType));
}

function concat(...parts: readonly (Uint8Array | readonly number[])[]): Uint8Array {
  return Buffer.concat(parts.map((part) => (part instanceof Uint8Array ? part : Uint8Array.from(part))));
}

function delimited(field: number, body: Uint8Array | readonly number[]): Uint8Array {
  return concat(tag(field, 2), varint(BigInt(body.length)), body);
}

const utf8 = (s: string): Uint8Array => Buffer.from(s, "utf8");

/** Field numbers no schema level declares (so protobuf-es keeps them as unknown fields). */
const UNKNOWN = {
  checkRequest: [2, 3, 15, 16, 1000],
  attributes: [3, 5, 9, 14, 99],
  request: [3, 7],
  http: [14, 15, 16, 200],
  headerMap: [2, 5],
  headerValue: [4, 6],
  entry: [3, 4],
} as const;

function unknownFields(r: Random, numbers: readonly number[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (let i = r.int(3); i > 0; i--) {
    const field = r.pick(numbers);
    switch (r.int(4)) {
      case 0:
        parts.push(concat(tag(field, 0), varint(r.pick([0n, 1n, 300n, 2n ** 53n, 2n ** 64n - 1n]))));
        break;
      case 1:
        parts.push(concat(tag(field, 1), Array.from({ length: 8 }, () => r.int(256))));
        break;
      case 2:
        parts.push(delimited(field, randomBytes(r, 20)));
        break;
      default:
        parts.push(concat(tag(field, 5), Array.from({ length: 4 }, () => r.int(256))));
    }
  }
  return concat(...parts);
}

function shuffled<T>(r: Random, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = r.int(i + 1);
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}

/** A map entry protobuf-es would not write: a missing key or value, duplicated fields, unknown fields. */
function oddEntry(r: Random, field: number): Uint8Array {
  const key = () => delimited(1, utf8(r.pick(NAMES)));
  const value = () => delimited(2, utf8(text(r)));
  switch (r.int(6)) {
    case 0:
      return delimited(field, value());
    case 1:
      return delimited(field, key());
    case 2:
      return delimited(field, concat(value(), key()));
    case 3:
      return delimited(field, concat(key(), value(), key(), value()));
    case 4:
      return delimited(field, concat(unknownFields(r, UNKNOWN.entry), key(), unknownFields(r, UNKNOWN.entry), value()));
    default:
      return delimited(field, []);
  }
}

/** A HeaderValue written by hand, with unknown fields or its fields twice. */
function oddHeaderValue(r: Random): Uint8Array {
  return delimited(
    1,
    concat(
      delimited(1, utf8(r.pick(NAMES))),
      unknownFields(r, UNKNOWN.headerValue),
      delimited(3, randomBytes(r, 6)),
      r.chance(0.5) ? delimited(2, utf8(text(r))) : [],
      r.chance(0.5) ? delimited(1, utf8(r.pick(NAMES).toUpperCase())) : [],
    ),
  );
}

function peer(r: Random): AttributeContext_Peer {
  return create(AttributeContext_PeerSchema, {
    address: { address: { case: "socketAddress", value: { address: "10.0.0.7", portSpecifier: { case: "portValue", value: r.int(65536) } } } },
    service: text(r),
    labels: record(r, 2),
    principal: text(r),
    certificate: text(r),
  });
}

/** One encoding of an HttpRequest's fields (several are concatenated: a merge). */
function httpPart(r: Random, small: boolean): Uint8Array {
  const parts: Uint8Array[] = [
    toBinary(
      AttributeContext_HttpRequestSchema,
      create(AttributeContext_HttpRequestSchema, {
        id: text(r),
        method: r.pick(["", "GET", "post", "DELETE", "ünï"]),
        path: r.pick(["", "/", "/v1/reports?page=2", "/ünï/😀?q=1"]),
        // `__proto__` comes in hand-written entries (oddEntry), whose bytes are ours to control.
        headers: record(r, small ? 4 : 12, NAMES.filter((name) => name !== "__proto__")),
        headerMap: r.chance(0.3)
          ? {
              headers: Array.from({ length: r.int(small ? 3 : 8) }, () => ({
                key: r.chance(0.5) ? r.pick(NAMES) : r.pick(NAMES).toUpperCase(),
                value: text(r),
                rawValue: r.pick([new Uint8Array(0), utf8(text(r)), randomBytes(r, 6)]),
              })),
            }
          : undefined,
        host: text(r),
        scheme: r.pick(["", "https"]),
        query: text(r),
        fragment: text(r),
        size: r.pick([0n, -1n, 300n, 2n ** 62n]),
        protocol: r.pick(["", "HTTP/1.1", "HTTP/2"]),
        body: small ? "" : text(r),
        rawBody: randomBytes(r, small ? 0 : 10),
      }),
    ),
  ];
  for (let i = r.int(3); i > 0; i--) parts.push(oddEntry(r, 3));
  if (r.chance(0.2)) parts.push(delimited(13, concat(oddHeaderValue(r), unknownFields(r, UNKNOWN.headerMap))));
  if (r.chance(0.1)) parts.push(delimited(13, []));
  parts.push(unknownFields(r, UNKNOWN.http));
  return concat(...shuffled(r, parts));
}

function requestPart(r: Random, small: boolean): Uint8Array {
  const parts: Uint8Array[] = [unknownFields(r, UNKNOWN.request)];
  if (r.chance(0.5)) parts.push(toBinary(AttributeContext_RequestSchema, create(AttributeContext_RequestSchema, { time: { seconds: 1_700_000_000n, nanos: r.int(1e9) } })));
  // Usually one http, sometimes none, sometimes two (merged), each of one or two parts (merged).
  for (let i = r.pick([0, 1, 1, 1, 2]); i > 0; i--) {
    parts.push(delimited(2, r.chance(0.3) ? concat(httpPart(r, small), httpPart(r, small)) : httpPart(r, small)));
  }
  return concat(...shuffled(r, parts));
}

function attributesPart(r: Random, small: boolean): Uint8Array {
  const parts: Uint8Array[] = [
    toBinary(
      AttributeContextSchema,
      create(AttributeContextSchema, {
        source: r.chance(0.7) ? peer(r) : undefined,
        destination: r.chance(0.7) ? peer(r) : undefined,
        contextExtensions: record(r, 4, [...SETTINGS.filter((name) => name !== "__proto__"), ...NAMES.slice(0, 4)]),
        metadataContext: r.chance(small ? 0 : 0.3)
          ? { filterMetadata: { "envoy.filters.http.jwt_authn": { sub: text(r), n: 1.5, ok: true, none: null, list: ["a", 2], nested: { k: "v" } } } }
          : undefined,
        routeMetadataContext: r.chance(small ? 0 : 0.2) ? { filterMetadata: { route: { name: text(r) } } } : undefined,
        tlsSession: r.chance(0.5) ? { sni: text(r) } : undefined,
      }),
    ),
    unknownFields(r, UNKNOWN.attributes),
  ];
  for (let i = r.int(3); i > 0; i--) parts.push(oddEntry(r, 10));
  for (let i = r.pick([0, 1, 1, 1, 2]); i > 0; i--) parts.push(delimited(4, requestPart(r, small)));
  return concat(...shuffled(r, parts));
}

/** An Envoy CheckRequest's bytes; `small` keeps it short for the per-offset mutation tests. */
function randomRequestBytes(r: Random, small = false): Uint8Array {
  const parts: Uint8Array[] = [unknownFields(r, UNKNOWN.checkRequest)];
  for (let i = r.pick([0, 1, 1, 1, 1, 2]); i > 0; i--) parts.push(delimited(1, attributesPart(r, small)));
  return concat(...shuffled(r, parts));
}


// ---------------------------------------------------------------------------------------------
// Oracles and views
// ---------------------------------------------------------------------------------------------

/**
 * The Envoy CheckRequest pruned to the fields the codec reads (same numbers, types and names):
 * protobuf-es with this schema parses exactly what ours parses and skips the rest as unknown
 * fields, so where it throws, the malformation is in what we read.
 */
const PRUNED_CHECK_REQUEST: DescMessage = (() => {
  const { STRING, BYTES, MESSAGE } = FieldDescriptorProto_Type;
  const field = (name: string, number: number, type: FieldDescriptorProto_Type, typeName = "", repeated = false) => ({
    name,
    number,
    type,
    typeName,
    label: repeated ? FieldDescriptorProto_Label.REPEATED : FieldDescriptorProto_Label.OPTIONAL,
  });
  const mapEntry = (name: string) => ({ name, field: [field("key", 1, STRING), field("value", 2, STRING)], options: { mapEntry: true } });
  const file = create(FileDescriptorProtoSchema, {
    name: "pruned.proto",
    package: "pruned",
    syntax: "proto3",
    messageType: [
      { name: "CheckRequest", field: [field("attributes", 1, MESSAGE, ".pruned.AttributeContext")] },
      {
        name: "AttributeContext",
        field: [
          field("request", 4, MESSAGE, ".pruned.Request"),
          field("context_extensions", 10, MESSAGE, ".pruned.AttributeContext.ContextExtensionsEntry", true),
        ],
        nestedType: [mapEntry("ContextExtensionsEntry")],
      },
      { name: "Request", field: [field("http", 2, MESSAGE, ".pruned.HttpRequest")] },
      {
        name: "HttpRequest",
        field: [
          field("method", 2, STRING),
          field("headers", 3, MESSAGE, ".pruned.HttpRequest.HeadersEntry", true),
          field("path", 4, STRING),
          field("header_map", 13, MESSAGE, ".pruned.HeaderMap"),
        ],
        nestedType: [mapEntry("HeadersEntry")],
      },
      { name: "HeaderMap", field: [field("headers", 1, MESSAGE, ".pruned.HeaderValue", true)] },
      { name: "HeaderValue", field: [field("key", 1, STRING), field("value", 2, STRING), field("raw_value", 3, BYTES)] },
    ],
  });
  const message = createFileRegistry(file, () => undefined).getMessage("pruned.CheckRequest");
  if (message === undefined) throw new Error("the pruned schema has no CheckRequest");
  return message;
})();

type Decoded = { ok: true; input: EnvoyAuthzInput } | { ok: false; error: unknown };

function attempt(decode: () => EnvoyAuthzInput): Decoded {
  try {
    return { ok: true, input: decode() };
  } catch (error) {
    return { ok: false, error };
  }
}

const ours = (bytes: Uint8Array): Decoded => attempt(() => decodeEnvoyCheckRequest(bytes));
const protobufEs = (bytes: Uint8Array): Decoded => attempt(() => fromBinary(CheckRequestSchema, bytes));
// A pruned message has the same local names as the generated one: an EnvoyAuthzInput.
const pruned = (bytes: Uint8Array): Decoded => attempt(() => fromBinary(PRUNED_CHECK_REQUEST, bytes) as unknown as EnvoyAuthzInput);

function input(decoded: Decoded): EnvoyAuthzInput {
  if (!decoded.ok) throw new Error(`expected the bytes to decode: ${String(decoded.error)}`);
  return decoded.input;
}

/** Entries in the object's own key order (`__proto__` included). */
const entriesOf = (map: { readonly [key: string]: string }): [string, string | undefined][] => Object.keys(map).map((key) => [key, map[key]]);

/** Everything the authorizer can read, as plain data (map order included). */
function view(request: EnvoyAuthzInput) {
  const attributes = request.attributes;
  if (attributes === undefined) return "no attributes";
  const http = attributes.request?.http;
  return {
    request:
      attributes.request === undefined
        ? "no request"
        : http === undefined
          ? "no http"
          : {
              method: http.method,
              path: http.path,
              headers: entriesOf(http.headers),
              headerMap: http.headerMap?.headers.map((h) => [h.key, h.value, Buffer.from(h.rawValue).toString("hex")]) ?? "no header_map",
            },
    contextExtensions: entriesOf(attributes.contextExtensions),
  };
}

/** Header names worth looking up: every one present (as proxiedRequestOf matches them), and absent ones. */
function headerNames(request: EnvoyAuthzInput): string[] {
  const http = request.attributes?.request?.http;
  const names = new Set([...NAMES, ...ABSENT]);
  for (const name of Object.keys(http?.headers ?? {})) names.add(name);
  for (const header of http?.headerMap?.headers ?? []) names.add(header.key.toLowerCase());
  return [...names];
}

/** What proxiedRequestOf answers for the request. */
function answers(request: EnvoyAuthzInput, names: readonly string[], settings: readonly string[]) {
  const proxied = proxiedRequestOf(request);
  return {
    method: proxied.method,
    path: proxied.path,
    headers: names.map((name) => [name, proxied.header(name)]),
    settings: settings.map((name) => [name, proxied.setting(name as RouteSetting)]),
  };
}

function settingNames(request: EnvoyAuthzInput): string[] {
  return [...new Set([...SETTINGS, ...ABSENT, ...Object.keys(request.attributes?.contextExtensions ?? {})])];
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

describe("decoding Envoy CheckRequests", () => {
  it("reads 3,000 generated requests as protobuf-es does, and proxiedRequestOf answers identically", () => {
    const r = random(11);
    let withHeaderMap = 0;
    for (let i = 0; i < 3_000; i++) {
      const bytes = randomRequestBytes(r);
      const expected = input(protobufEs(bytes));
      const actual = input(ours(bytes));
      expect(view(actual)).toEqual(view(expected));
      // The oracle of the mutation tests agrees with the real schema on valid input.
      expect(view(input(pruned(bytes)))).toEqual(view(expected));
      const names = headerNames(expected);
      const settings = settingNames(expected);
      const expectedAnswers = answers(expected, names, settings);
      // Looked up before anything reads `headers` (the decoder's ranges), and after (its map).
      expect(answers(input(ours(bytes)), names, settings)).toEqual(expectedAnswers);
      expect(answers(actual, names, settings)).toEqual(expectedAnswers);
      if ((expected.attributes?.request?.http?.headerMap?.headers.length ?? 0) > 0) withHeaderMap++;
    }
    // The generator reaches both header lookups (header_map and the headers map).
    expect(withHeaderMap).toBeGreaterThan(300);
  });

  it("reads the bench's request shape (extAuthzMix) as protobuf-es does", () => {
    const request = envoyRequest({ headers: { "x-api-key": GOOD_KEY, accept: "application/json" }, contextExtensions: { feature: "reports.export" } });
    const bytes = toBinary(CheckRequestSchema, request);
    const decoded = decodeEnvoyCheckRequest(bytes);
    expect(view(decoded)).toEqual(view(request));
    expect(decoded.attributes?.request?.http?.headers["x-api-key"]).toBe(GOOD_KEY);
    expect(decoded.attributes?.contextExtensions).toEqual({ feature: "reports.export" });
  });

  it("keeps the last duplicate map key at its first position, and gives a missing key or value \"\"", () => {
    const http = concat(
      delimited(3, concat(delimited(1, utf8("x-api-key")), delimited(2, utf8("first")))),
      delimited(3, concat(delimited(1, utf8("accept")), delimited(2, utf8("*/*")))),
      delimited(3, concat(delimited(1, utf8("x-api-key")), delimited(2, utf8("second")))),
      delimited(3, delimited(2, utf8("no key"))),
      delimited(3, delimited(1, utf8("no-value"))),
    );
    const bytes = delimited(1, delimited(4, delimited(2, http)));
    const decoded = decodeEnvoyCheckRequest(bytes);
    expect(entriesOf(decoded.attributes?.request?.http?.headers ?? {})).toEqual([
      ["x-api-key", "second"],
      ["accept", "*/*"],
      ["", "no key"],
      ["no-value", ""],
    ]);
    expect(view(decoded)).toEqual(view(input(protobufEs(bytes))));
  });

  it("merges a sub-message that appears twice and keeps the last value of a string", () => {
    const bytes = concat(
      delimited(1, delimited(4, delimited(2, concat(delimited(2, utf8("GET")), delimited(4, utf8("/a")), delimited(13, delimited(1, delimited(1, utf8("a")))))))),
      delimited(1, concat(delimited(4, delimited(2, concat(delimited(2, utf8("POST")), delimited(13, delimited(1, delimited(1, utf8("b"))))))), delimited(10, delimited(1, utf8("feature"))))),
    );
    const decoded = decodeEnvoyCheckRequest(bytes);
    const http = decoded.attributes?.request?.http;
    expect([http?.method, http?.path, http?.headerMap?.headers.map((h) => h.key)]).toEqual(["POST", "/a", ["a", "b"]]);
    expect(view(decoded)).toEqual(view(input(protobufEs(bytes))));
  });

  it("keeps `__proto__` as an own header and never answers Object.prototype members, as with protobuf-es", () => {
    const entry = (key: string, value: string) => delimited(3, concat(delimited(1, utf8(key)), delimited(2, utf8(value))));
    const extension = (key: string, value: string) => delimited(10, concat(delimited(1, utf8(key)), delimited(2, utf8(value))));
    const bytes = delimited(1, concat(delimited(4, delimited(2, concat(entry("__proto__", "p"), entry("x", "1")))), extension("__proto__", "f")));
    const names = ["__proto__", "constructor", "toString", "hasOwnProperty", "x"];
    const settings = ["__proto__", "constructor", "feature"];
    const expected = answers(input(protobufEs(bytes)), names, settings);
    // Before the header map is built (the decoder's ranges), then after.
    expect(answers(decodeEnvoyCheckRequest(bytes), names, settings)).toEqual(expected);
    const decoded = decodeEnvoyCheckRequest(bytes);
    const headers = decoded.attributes?.request?.http?.headers ?? {};
    expect(Object.getPrototypeOf(headers)).toBe(Object.prototype);
    expect(Object.hasOwn(headers, "__proto__")).toBe(true);
    expect(answers(decoded, names, settings)).toEqual(expected);
    expect(expected.headers).toEqual([["__proto__", "p"], ["constructor", undefined], ["toString", undefined], ["hasOwnProperty", undefined], ["x", "1"]]);
    expect(expected.settings).toEqual([["__proto__", "f"], ["constructor", undefined], ["feature", undefined]]);
  });

  it("throws at every truncation of 100 requests exactly where protobuf-es throws, and reads the rest identically", () => {
    const r = random(23);
    let truncations = 0;
    let accepted = 0;
    for (let i = 0; i < 100; i++) {
      const bytes = randomRequestBytes(r, true);
      for (let end = 0; end < bytes.length; end++) {
        const truncated = bytes.subarray(0, end);
        const expected = protobufEs(truncated);
        const actual = ours(truncated);
        // expect() only on a difference: it costs more than the decoding, 40,000 times over.
        if (actual.ok !== expected.ok) expect(actual.ok, `request ${i} cut at ${end}`).toBe(expected.ok);
        if (expected.ok && actual.ok) {
          accepted++;
          expect(view(actual.input)).toEqual(view(expected.input));
        }
        truncations++;
      }
    }
    expect(truncations).toBeGreaterThan(20_000);
    // Cuts between top-level fields are valid messages; most cuts are not.
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(truncations / 10);
  });

  it("throws for every corruption of 300 requests that protobuf-es rejects in the fields we read; what it accepts reads identically", () => {
    const r = random(31);
    const counts = { mutations: 0, rejectedByBoth: 0, acceptedByBoth: 0, onlyOursRejects: 0, onlySkippedContentBroken: 0 };
    for (let i = 0; i < 300; i++) {
      const bytes = randomRequestBytes(r, true);
      for (let m = 0; m < 30; m++) {
        const mutated = Uint8Array.from(bytes);
        const at = r.int(mutated.length);
        // Tag-like bytes (field 0, groups, wire types 6 and 7, continuation bits) and random ones.
        mutated[at] = r.chance(0.5) ? r.pick([0x00, 0x07, 0x0b, 0x0c, 0x0e, 0x0f, 0x08, 0x11, 0x15, 0x1a, 0x80, 0xff]) : r.int(256);
        const oracle = pruned(mutated);
        const actual = ours(mutated);
        counts.mutations++;
        if (!oracle.ok) {
          if (actual.ok) expect(actual.ok, `request ${i}, byte ${at} = ${mutated[at]}`).toBe(false);
          counts.rejectedByBoth++;
        } else if (actual.ok) {
          expect(view(actual.input)).toEqual(view(oracle.input));
          counts.acceptedByBoth++;
          if (!protobufEs(mutated).ok) counts.onlySkippedContentBroken++;
        } else {
          counts.onlyOursRejects++;
        }
      }
    }
    expect(counts.mutations).toBe(9_000);
    expect(counts.rejectedByBoth).toBeGreaterThan(1_000);
    expect(counts.acceptedByBoth).toBeGreaterThan(1_000);
    // The deliberate differences of the module comment both occur in this corpus.
    expect(counts.onlySkippedContentBroken).toBeGreaterThan(0);
    expect(counts.onlyOursRejects).toBeGreaterThan(0);
  });

  const inHttp = (...fields: readonly (Uint8Array | readonly number[])[]) => delimited(1, delimited(4, delimited(2, concat(...fields))));
  const inAttributes = (...fields: readonly (Uint8Array | readonly number[])[]) => delimited(1, concat(...fields));

  it.each([
    ["a truncated varint", [0x0a, 0xff]],
    ["a length past the end", [0x0a, 0x05, 0x22]],
    ["field number 0", inAttributes([0x00, 0x01])],
    ["wire type 6", inHttp([0x0e])],
    ["wire type 7", inHttp([0x0f])],
    ["an end-group tag", [0x0c]],
    ["a tag of 6 bytes", [0x8a, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00]],
    ["a tag above uint32", [0x82, 0x80, 0x80, 0x80, 0x10, 0x00]],
    ["invalid UTF-8 in the method", inHttp(delimited(2, [0xff]))],
    ["an overlong encoding in the path", inHttp(delimited(4, [0xc0, 0x80]))],
    ["a UTF-16 surrogate in a header name", inHttp(delimited(3, delimited(1, [0xed, 0xa0, 0x80])))],
    ["a code point above U+10FFFF in a header value", inHttp(delimited(3, delimited(2, [0xf4, 0x90, 0x80, 0x80])))],
    ["a cut-off sequence in a header_map key", inHttp(delimited(13, delimited(1, delimited(1, [0xe2, 0x82]))))],
    ["invalid UTF-8 in a context extension", inAttributes(delimited(10, delimited(1, [0x66, 0xff])))],
  ])("rejects %s, as protobuf-es does", (_name, bytes) => {
    const buf = Uint8Array.from(bytes);
    expect(protobufEs(buf).ok).toBe(false);
    expect(() => decodeEnvoyCheckRequest(buf)).toThrow(Error);
  });

  it.each([
    ["a read field with another wire type (method as a varint)", inHttp([0x10, 0x00])],
    ["a map entry running past the end of its message", concat([0x0a, 0x02, 0x52, 0x03], delimited(1, utf8("a")))],
    ["a group", inAttributes([0x1b, 0x08, 0x01, 0x1c])],
    ["a varint of 11 bytes in a skipped field", inAttributes([0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])],
  ])("rejects %s, where protobuf-es is lenient", (_name, bytes) => {
    const buf = Uint8Array.from(bytes);
    expect(protobufEs(buf).ok).toBe(true);
    expect(() => decodeEnvoyCheckRequest(buf)).toThrow(Error);
  });

  it.each([
    ["invalid UTF-8 in the host", inHttp(delimited(2, utf8("GET")), delimited(5, [0xff]))],
    ["a source address running past the end", inAttributes(delimited(1, [0x0a, 0x7f]), delimited(10, concat(delimited(1, utf8("feature")), delimited(2, utf8("f")))))],
  ])("accepts %s: malformed content of a field it skips", (_name, bytes) => {
    const buf = Uint8Array.from(bytes);
    expect(protobufEs(buf).ok).toBe(false);
    expect(view(decodeEnvoyCheckRequest(buf))).toEqual(view(input(pruned(buf))));
  });

  it("skips a field it does not read with whatever wire type it has", () => {
    // source (1) as a varint and tls_session (12) as fixed32: protobuf-es misreads both.
    const bytes = inAttributes([0x08, 0x05, 0x65, 1, 2, 3, 4], delimited(10, concat(delimited(1, utf8("feature")), delimited(2, utf8("f")))));
    expect(decodeEnvoyCheckRequest(bytes).attributes?.contextExtensions).toEqual({ feature: "f" });
  });
});

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/** toCheckResponse as it was, with create(): the reference for the literal-building one. */
function referenceResponse(answer: AuthzAnswer): CheckResponse {
  const options = (pairs: readonly HeaderPair[]): HeaderValueOption[] =>
    pairs.map((pair) =>
      create(HeaderValueOptionSchema, {
        header: { key: pair.name, value: pair.value },
        appendAction: HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
      }),
    );
  if (answer.allow) {
    const headersToRemove = [...answer.clearedUpstreamHeaders];
    if (answer.credentialHeader !== undefined) headersToRemove.push(answer.credentialHeader);
    return create(CheckResponseSchema, {
      status: create(StatusSchema, { code: 0 }),
      httpResponse: {
        case: "okResponse",
        value: create(OkHttpResponseSchema, { headers: options(answer.upstreamHeaders), headersToRemove, responseHeadersToAdd: options(answer.responseHeaders) }),
      },
      dynamicMetadata: { license_id: answer.licenseId, plan: answer.plan, decision_id: answer.decisionId },
    });
  }
  return create(CheckResponseSchema, {
    status: create(StatusSchema, { code: answer.grpcCode, message: `${answer.reason}: ${answer.message}` }),
    httpResponse: {
      case: "deniedResponse",
      value: create(DeniedHttpResponseSchema, { status: { code: answer.status }, headers: options(answer.headers), body: answer.body }),
    },
  });
}

/** Long values too, so lengths take 2 and 3 varint bytes. */
function answerText(r: Random): string {
  return r.chance(0.02) ? r.pick(["é".repeat(9_000), "y".repeat(20_000)]) : text(r);
}

function pairs(r: Random, max: number): HeaderPair[] {
  return Array.from({ length: r.int(max + 1) }, () => ({ name: r.pick(NAMES), value: answerText(r) }));
}

function randomAnswer(r: Random): AuthzAnswer {
  if (r.chance(0.5)) {
    const allow: AllowAnswer = {
      allow: true,
      upstreamHeaders: pairs(r, r.chance(0.1) ? 40 : 5),
      clearedUpstreamHeaders: Array.from({ length: r.int(6) }, () => r.pick(NAMES)),
      credentialHeader: r.pick([undefined, "x-api-key", "authorization", ""]),
      responseHeaders: pairs(r, 2),
      licenseId: answerText(r),
      plan: answerText(r),
      decisionId: answerText(r),
    };
    return allow;
  }
  const deny: DenyAnswer = {
    allow: false,
    status: r.pick([400, 401, 403, 429, 500, 503, 0, 200, 999]),
    grpcCode: r.pick([3, 7, 8, 13, 14, 16, 0]),
    reason: r.pick(["QUOTA_EXHAUSTED", "NO_ROUTE", "", "ünï"]),
    message: answerText(r),
    decisionId: answerText(r),
    headers: pairs(r, r.chance(0.1) ? 40 : 4),
    body: answerText(r),
  };
  return deny;
}

/** A JsonObject of strings with own keys only (`__proto__` included), in generated order. */
function stringStruct(r: Random): JsonObject {
  return Object.fromEntries(Array.from({ length: r.int(5) }, () => [r.pick(NAMES), answerText(r)]));
}

/** CheckResponses of the covered shapes beyond what toCheckResponse builds. */
function randomResponse(r: Random): CheckResponse {
  const options = () =>
    Array.from({ length: r.int(4) }, () =>
      create(HeaderValueOptionSchema, {
        header: r.chance(0.8) ? { key: r.pick(NAMES), value: text(r), rawValue: randomBytes(r, 4) } : undefined,
        appendAction: r.pick([0, 1, 2, 3, 7, -1]),
        keepEmptyValue: r.chance(0.5),
      }),
    );
  const httpResponse = r.pick([
    () => ({ case: undefined }),
    () => ({
      case: "okResponse" as const,
      value: create(OkHttpResponseSchema, {
        headers: options(),
        headersToRemove: Array.from({ length: r.int(3) }, () => text(r)),
        responseHeadersToAdd: options(),
        dynamicMetadata: r.chance(0.5) ? stringStruct(r) : undefined,
      }),
    }),
    () => ({
      case: "deniedResponse" as const,
      value: create(DeniedHttpResponseSchema, { status: r.chance(0.8) ? { code: r.pick([0, 200, 403, 7, -5]) } : undefined, headers: options(), body: text(r) }),
    }),
  ])();
  return create(CheckResponseSchema, {
    status: r.chance(0.8) ? { code: r.pick([0, 1, 16, -1, -2_147_483_648, 2_147_483_647]), message: text(r) } : undefined,
    httpResponse,
    dynamicMetadata: r.chance(0.5) ? stringStruct(r) : undefined,
  });
}

/** No lone surrogate in any string of `value`. */
function wellFormed(value: unknown): boolean {
  if (typeof value === "string") return !/\p{Cs}/u.test(value);
  if (typeof value === "object" && value !== null) return Object.values(value).every(wellFormed);
  return true;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");

/** The specialized encoding, failing the test if the message fell back to toBinary. */
function specialized(message: CheckResponse): Uint8Array {
  const bytes = encodeSpecialized(message);
  if (bytes === undefined) throw new Error("expected the specialized encoding, got the fallback");
  return bytes;
}

describe("encoding Envoy CheckResponses", () => {
  it("builds 5,000 generated answers into the messages create() built, encoded byte for byte as toBinary does", () => {
    const r = random(42);
    let allowed = 0;
    let readBack = 0;
    for (let i = 0; i < 5_000; i++) {
      const answer = randomAnswer(r);
      const message = toCheckResponse(answer);
      const reference = referenceResponse(answer);
      expect(message).toEqual(reference);
      const bytes = specialized(message);
      expect(hex(bytes)).toBe(hex(toBinary(CheckResponseSchema, reference)));
      expect(hex(encodeEnvoyCheckResponse(message))).toBe(hex(bytes));
      // A lone surrogate goes on the wire as U+FFFD: only well-formed text reads back as it was.
      if (wellFormed(answer)) {
        expect(fromBinary(CheckResponseSchema, bytes)).toEqual(reference);
        readBack++;
      }
      if (answer.allow) allowed++;
    }
    expect(readBack).toBeGreaterThan(2_000);
    expect(allowed).toBeGreaterThan(2_000);
    expect(allowed).toBeLessThan(3_000);
  });

  it("writes 5,000 generated answers straight to the bytes of the message toCheckResponse builds", () => {
    const r = random(4242);
    for (let i = 0; i < 5_000; i++) {
      const answer = randomAnswer(r);
      const bytes = encodeEnvoyAnswer(answer);
      if (bytes === undefined) throw new Error("expected the direct encoding, got undefined");
      expect(hex(bytes)).toBe(hex(toBinary(CheckResponseSchema, referenceResponse(answer))));
    }
  });

  it("leaves an answer whose status is not an int32 to the message encoding", () => {
    const answer: DenyAnswer = { allow: false, status: 2 ** 40, grpcCode: 7, reason: "NO_ROUTE", message: "m", decisionId: "", headers: [], body: "{}" };
    expect(encodeEnvoyAnswer(answer)).toBeUndefined();
    expect(encodeEnvoyAnswer({ ...answer, status: 403 })).toBeDefined();
  });

  it("encodes 5,000 generated messages of the covered shapes byte for byte as toBinary does", () => {
    const r = random(7);
    for (let i = 0; i < 5_000; i++) {
      const message = randomResponse(r);
      expect(hex(specialized(message))).toBe(hex(toBinary(CheckResponseSchema, message)));
    }
  });

  it("writes metadata keys in Object.keys order: integer-like keys first, `__proto__` as an own key", () => {
    const metadata: JsonObject = JSON.parse('{"b":"1","__proto__":"2","10":"3","a":"4","2":"5"}') as JsonObject;
    const message = toCheckResponse({ allow: false, status: 403, grpcCode: 7, reason: "NO_ROUTE", message: "m", decisionId: "", headers: [], body: "{}" });
    message.dynamicMetadata = metadata;
    const bytes = specialized(message);
    expect(hex(bytes)).toBe(hex(toBinary(CheckResponseSchema, message)));
    expect(Object.keys(fromBinary(CheckResponseSchema, bytes).dynamicMetadata ?? {})).toEqual(["2", "10", "b", "__proto__", "a"]);
  });

  it("encodes a response larger than its reused scratch buffer, and returns bytes later calls do not overwrite", () => {
    const big = toCheckResponse({ allow: false, status: 429, grpcCode: 8, reason: "RATE_LIMITED", message: "é".repeat(50_000), decisionId: "d", headers: [], body: "b".repeat(100_000) });
    const small = toCheckResponse({ allow: false, status: 403, grpcCode: 7, reason: "NO_ROUTE", message: "m", decisionId: "", headers: [], body: "{}" });
    const first = specialized(small);
    const before = hex(first);
    expect(hex(specialized(big))).toBe(hex(toBinary(CheckResponseSchema, big)));
    expect(hex(specialized(small))).toBe(before);
    expect(hex(first)).toBe(before);
  });

  const ok = () => toCheckResponse({ allow: true, upstreamHeaders: [{ name: "x-license-id", value: "lic" }], clearedUpstreamHeaders: [], credentialHeader: undefined, responseHeaders: [], licenseId: "lic", plan: "pro", decisionId: "d" });
  const okValue = (message: CheckResponse) => {
    if (message.httpResponse.case !== "okResponse") throw new Error("expected an ok_response");
    return message.httpResponse.value;
  };

  it.each<[string, (message: CheckResponse) => void]>([
    ["status details", (m) => m.status?.details.push(create(AnySchema, { typeUrl: "type.googleapis.com/x", value: Uint8Array.of(1, 2) }))],
    ["query parameters to set", (m) => okValue(m).queryParametersToSet.push({ $typeName: "envoy.config.core.v3.QueryParameter", key: "a", value: "b" })],
    ["query parameters to remove", (m) => okValue(m).queryParametersToRemove.push("a")],
    ["the deprecated append set to false", (m) => (((okValue(m).headers[0] as HeaderValueOption).append = false))],
    ["the deprecated append set to true", (m) => (((okValue(m).headers[0] as HeaderValueOption).append = true))],
    ["a number in the metadata", (m) => (m.dynamicMetadata = { n: 1.5, z: -0 })],
    ["null, a list and an object in the metadata", (m) => (m.dynamicMetadata = { none: null, list: ["a", 1, true], nested: { k: "v" } })],
    ["unknown fields", (m) => (m.$unknown = [{ no: 99, wireType: 0, data: Uint8Array.of(1) }])],
    ["unknown fields in a header option", (m) => ((okValue(m).headers[0] as HeaderValueOption).$unknown = [{ no: 9, wireType: 0, data: Uint8Array.of(1) }])],
    ["no http response value", (m) => (m.httpResponse = { case: "okResponse", value: undefined } as unknown as CheckResponse["httpResponse"])],
  ])("falls back to toBinary for %s, with the same bytes", (_name, change) => {
    const message = ok();
    change(message);
    expect(encodeSpecialized(message)).toBeUndefined();
    expect(hex(encodeEnvoyCheckResponse(message))).toBe(hex(toBinary(CheckResponseSchema, message)));
  });

  it.each<[string, (message: CheckResponse) => void]>([
    ["a status code that is not an integer", (m) => m.status !== undefined && (m.status.code = 1.5)],
    ["a status code above int32", (m) => m.status !== undefined && (m.status.code = 2 ** 31)],
    ["a header option of another message type", (m) => ((okValue(m).headers[0] as { $typeName: string }).$typeName = "google.rpc.Status")],
  ])("throws what toBinary throws for %s", (_name, change) => {
    const message = ok();
    change(message);
    expect(() => toBinary(CheckResponseSchema, message)).toThrow();
    let expected: unknown;
    try {
      toBinary(CheckResponseSchema, message);
    } catch (err) {
      expected = err;
    }
    expect(() => encodeEnvoyCheckResponse(message)).toThrow((expected as Error).message);
  });
});

// ---------------------------------------------------------------------------------------------
// On the gRPC port
// ---------------------------------------------------------------------------------------------

describe("the ext_authz raw handler on the gRPC port", () => {
  let plainServer: GrpcServer;
  let codecServer: GrpcServer;
  let plainClient: grpc.Client;
  let codecClient: grpc.Client;

  /** The binding through protobuf-es, or (raw) the binding replaced by createExtAuthzGrpcHandler as app.ts mounts it. */
  async function start(raw: boolean): Promise<[GrpcServer, grpc.Client]> {
    const deps: AuthzDeps = {
      check: scriptedCheck(),
      routes: ROUTES,
      logger: recordingLogger(),
      now: () => NOW_MS,
      options: { removeCredentialHeader: true },
    };
    const server = createGrpcServer({
      bindings: [createAuthorizationBinding(deps)],
      health: createHealthRegistry("SERVING"),
      reflectionFiles: [file_envoy_service_auth_v3_external_auth],
      logger: serverLogger(),
      ...(raw ? { rawUnary: new Map([[EXT_AUTHZ_CHECK_PATH, createExtAuthzGrpcHandler(deps)]]) } : {}),
    });
    return [server, rawClient(await server.listen("127.0.0.1", 0))];
  }

  beforeAll(async () => {
    [plainServer, plainClient] = await start(false);
    [codecServer, codecClient] = await start(true);
  });

  afterAll(async () => {
    plainClient.close();
    codecClient.close();
    await Promise.all([plainServer.shutdown(5_000), codecServer.shutdown(5_000)]);
  });

  it.each([
    ["an allowed request", { headers: { "x-api-key": GOOD_KEY }, contextExtensions: { feature: "reports.export" } }],
    ["a request without a credential", { contextExtensions: { feature: "reports.export" } }],
    ["a request no route maps", { path: "/nowhere", headers: { authorization: `Bearer ${GOOD_KEY}` } }],
  ])("answers %s with the bytes protobuf-es's codec answers", async (_name, init) => {
    const bytes = toBinary(CheckRequestSchema, envoyRequest(init));
    const [expected, actual] = await Promise.all([rawUnary(plainClient, EXT_AUTHZ_CHECK_PATH, bytes), rawUnary(codecClient, EXT_AUTHZ_CHECK_PATH, bytes)]);
    if (!expected.ok || !actual.ok) throw new Error("expected both calls to succeed");
    expect(hex(actual.bytes)).toBe(hex(expected.bytes));
  });

  it("answers malformed bytes with INVALID_ARGUMENT", async () => {
    const result = await rawUnary(codecClient, EXT_AUTHZ_CHECK_PATH, Uint8Array.of(0x0a, 0x05, 0x22));
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error.code).toBe(3);
  });
});
