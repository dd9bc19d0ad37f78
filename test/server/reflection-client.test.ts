/**
 * Reflection as a real tool uses it: `buf curl` (run through npx, like grpcurl a Go client built
 * on the same reflection protocol) lists the services and calls Check knowing nothing but the URL.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { file_licensing_v1_licensing } from "../../src/gen/licensing/v1/licensing_pb.js";
import { createGrpcServer } from "../../src/server/grpc-server.js";
import type { GrpcServer } from "../../src/server/grpc-server.js";
import { createHealthRegistry } from "../../src/server/health.js";
import { BUF_COMMAND } from "../support/buf.js";
import { fakeLicensingBinding, recordingLogger } from "./support.js";

const run = promisify(execFile);
const [BUF, ...BUF_ARGS] = BUF_COMMAND as [string, ...string[]];

describe("reflection with buf curl", () => {
  let server: GrpcServer;
  let url: string;

  beforeAll(async () => {
    server = createGrpcServer({
      bindings: [fakeLicensingBinding()],
      health: createHealthRegistry("SERVING"),
      reflectionFiles: [file_licensing_v1_licensing],
      logger: recordingLogger(),
    });
    url = `http://127.0.0.1:${await server.listen("127.0.0.1", 0)}`;
  });

  afterAll(() => server.shutdown(5_000));

  it("lists the methods of every reflected service", async () => {
    const { stdout } = await run(BUF, [...BUF_ARGS, "curl", "--protocol", "grpc", "--list-methods", url]);
    expect(stdout.split("\n")).toEqual(
      expect.arrayContaining([
        "licensing.v1.LicensingService/Check",
        "licensing.v1.LicensingService/Report",
        "grpc.health.v1.Health/Watch",
      ]),
    );
  });

  it("calls Check with a JSON request encoded from the reflected schema", async () => {
    const { stdout } = await run(BUF, [...BUF_ARGS, 
      "curl",
      "--protocol",
      "grpc",
      "--data",
      '{"feature":"export","apiKey":"k"}',
      `${url}/licensing.v1.LicensingService/Check`,
    ]);
    const response = JSON.parse(stdout) as Record<string, unknown>;
    expect(response).toMatchObject({
      decision: "DECISION_ALLOW",
      message: "feature export allowed",
      limit: "1000",
      resetsAt: "2026-01-01T00:00:00Z",
      retryAfter: "3.500s",
    });
  });
});
