/**
 * The reference for every ratio in bench/RESULTS.md: a bare @grpc/grpc-js server that answers
 * each call with a constant, pre-encoded response, on the same method paths the service serves.
 * It is what a plain grpc-js service costs with nothing to decide: the service has to decide
 * (decode, credential lookup, decision, response encode, decision log) and still keep up with it.
 * The service answers these two paths on its fast lane (src/server/unary-fast-lane.ts), straight
 * on node:http2; this server answers them through grpc-js, as any grpc-js service would.
 *
 * It uses the same transport settings the service does (raw-bytes method definitions, 1000
 * concurrent streams, 4 MiB messages).
 *
 * Usage: node dist/bench/bare-server.js [port]   (port 0 or absent: a free one)
 * Prints one JSON line `{"bare":"listening","port":N}` to stdout once bound; exits on SIGTERM.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { DurationSchema, TimestampSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { HeaderValueOption_HeaderAppendAction } from "../src/gen/envoy/config/core/v3/base_pb.js";
import { CheckResponseSchema as EnvoyCheckResponseSchema, OkHttpResponseSchema } from "../src/gen/envoy/service/auth/v3/external_auth_pb.js";
import { StatusSchema } from "../src/gen/google/rpc/status_pb.js";
import { CheckResponseSchema, Decision, Reason } from "../src/gen/licensing/v1/licensing_pb.js";

/** The method paths answered, and the constant answer of each. */
export const BARE_PATHS = {
  check: "/licensing.v1.LicensingService/Check",
  extAuthz: "/envoy.service.auth.v3.Authorization/Check",
} as const;

/**
 * A CheckResponse shaped like the service's answer to an allowed quota Check (ids, limit,
 * remaining, reset time, policy version), so the bare server encodes and sends about as many
 * bytes as the service does.
 */
export function constantCheckResponse(): Buffer {
  const message = create(CheckResponseSchema, {
    decision: Decision.ALLOW,
    reason: Reason.OK,
    licenseId: "bench-lic-0001",
    plan: "bench",
    accountId: "bench-acct-0001",
    limit: 1_000_000_000_000n,
    remaining: 999_999_000_000n,
    resetsAt: create(TimestampSchema, { seconds: 1_800_000_000n }),
    cacheTtl: create(DurationSchema, { seconds: 0n }),
    decisionId: "00000000-0000-4000-8000-000000000000",
    policyVersion: 1n,
  });
  return Buffer.from(toBinary(CheckResponseSchema, message));
}

/**
 * An allowed ext_authz answer shaped like the service's (src/envoy/ext-authz.ts): the upstream
 * licence headers it sets, the headers it removes and the dynamic metadata it adds, so the bare
 * server encodes and sends about as many bytes as the service does.
 */
export function constantExtAuthzResponse(): Buffer {
  const overwrite = HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD;
  const header = (key: string, value: string) => ({ header: { key, value }, appendAction: overwrite });
  const message = create(EnvoyCheckResponseSchema, {
    status: create(StatusSchema, { code: 0 }),
    httpResponse: {
      case: "okResponse",
      value: create(OkHttpResponseSchema, {
        headers: [
          header("x-license-id", "bench-lic-0001"),
          header("x-license-plan", "bench"),
          header("x-account-id", "bench-acct-0001"),
          header("x-decision-id", "00000000-0000-4000-8000-000000000000"),
        ],
        headersToRemove: ["x-license-remaining", "x-api-key"],
      }),
    },
    dynamicMetadata: { license_id: "bench-lic-0001", plan: "bench", decision_id: "00000000-0000-4000-8000-000000000000" },
  });
  return Buffer.from(toBinary(EnvoyCheckResponseSchema, message));
}

function passThrough(bytes: Buffer): Buffer {
  return bytes;
}

function constantMethod(path: string, answer: Buffer): [grpc.MethodDefinition<Buffer, Buffer>, grpc.handleUnaryCall<Buffer, Buffer>] {
  const definition: grpc.MethodDefinition<Buffer, Buffer> = {
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: passThrough,
    requestDeserialize: passThrough,
    responseSerialize: passThrough,
    responseDeserialize: passThrough,
  };
  return [definition, (_call, callback) => callback(null, answer)];
}

/** Builds the server (not yet bound). */
export function createBareServer(): grpc.Server {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": 4 * 1024 * 1024,
    "grpc.max_send_message_length": 4 * 1024 * 1024,
    "grpc.max_concurrent_streams": 1000,
    "grpc.keepalive_time_ms": 60_000,
    "grpc.keepalive_timeout_ms": 20_000,
    // As on the service's gRPC port (src/server/grpc-server.ts), so the comparison stays fair.
    "grpc.enable_channelz": 0,
  });
  const answers: ReadonlyArray<readonly [string, Buffer]> = [
    [BARE_PATHS.check, constantCheckResponse()],
    [BARE_PATHS.extAuthz, constantExtAuthzResponse()],
  ];
  for (const [path, answer] of answers) {
    const [definition, handler] = constantMethod(path, answer);
    server.addService({ Check: definition }, { Check: handler });
  }
  return server;
}

function main(argv: readonly string[]): void {
  const port = Number(argv[0] ?? "0");
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`bare-server: port must be 0-65535, got "${argv[0]}"\n`);
    process.exit(2);
  }
  const server = createBareServer();
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
    if (err !== null) {
      process.stderr.write(`bare-server: ${err.message}\n`);
      process.exit(1);
    }
    process.stdout.write(`${JSON.stringify({ bare: "listening", port: bound })}\n`);
  });
  const stop = () => server.tryShutdown(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

// Run only as a program, not when imported (the smoke test imports the constants).
if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main(process.argv.slice(2));
}
