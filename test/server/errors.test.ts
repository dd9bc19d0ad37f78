import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { CheckRequestSchema } from "../../src/gen/licensing/v1/licensing_pb.js";
import {
  decodeRequest,
  invalidArgument,
  isUnexpectedError,
  toConnectError,
  toGrpcStatus,
  unauthenticated,
  unavailable,
  unimplemented,
} from "../../src/server/errors.js";

describe("errors", () => {
  it("invalidArgument names the field first", () => {
    const error = invalidArgument("events[3].id", "must not be empty");
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toBe("events[3].id: must not be empty");
  });

  it("helpers carry their gRPC codes, and unavailable keeps its cause for the log", () => {
    const cause = new Error("ECONNREFUSED");
    expect(toGrpcStatus(unauthenticated("no service token"))).toEqual({ code: 16, details: "no service token" });
    expect(toGrpcStatus(unimplemented("not yet"))).toEqual({ code: 12, details: "not yet" });
    const error = unavailable("store unreachable", cause);
    expect(toGrpcStatus(error)).toEqual({ code: 14, details: "store unreachable" });
    expect(error.cause).toBe(cause);
  });

  it("anything that is not a ConnectError becomes INTERNAL 'internal error', never its own message", () => {
    expect(toGrpcStatus(new Error("password=x"))).toEqual({ code: 13, details: "internal error" });
    expect(toGrpcStatus("a string")).toEqual({ code: 13, details: "internal error" });
    const connect = toConnectError(new TypeError("password=x"));
    expect(connect.code).toBe(Code.Internal);
    expect(connect.rawMessage).toBe("internal error");
  });

  it("only bugs count as unexpected", () => {
    expect(isUnexpectedError(new Error("x"))).toBe(true);
    expect(isUnexpectedError(new ConnectError("x", Code.Internal))).toBe(true);
    expect(isUnexpectedError(invalidArgument("f", "x"))).toBe(false);
    expect(isUnexpectedError(unavailable("x"))).toBe(false);
  });

  it("decodeRequest turns bad bytes into INVALID_ARGUMENT naming the type", () => {
    expect(() => decodeRequest(CheckRequestSchema, new Uint8Array([0xff, 0xff]))).toThrow(
      /^\[invalid_argument\] request: cannot decode licensing\.v1\.CheckRequest: /,
    );
    expect(decodeRequest(CheckRequestSchema, new Uint8Array()).feature).toBe("");
  });
});
