/**
 * A raw @grpc/grpc-js client for tests: sends any bytes (so tests can send garbage) and decodes
 * answers with the generated schemas.
 */
import * as grpc from "@grpc/grpc-js";
import { fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape, create } from "@bufbuild/protobuf";

export interface GrpcCallError {
  readonly code: grpc.status;
  readonly details: string;
}

export class RawGrpcClient {
  readonly client: grpc.Client;

  constructor(address: string) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure());
  }

  /** Sends raw bytes to `path`; resolves the raw answer or rejects with the status. */
  callRaw(path: string, body: Buffer, metadata = new grpc.Metadata()): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        path,
        (b: Buffer) => b,
        (b: Buffer) => b,
        body,
        metadata,
        { deadline: Date.now() + 10_000 },
        (error, value) => {
          if (error) reject({ code: error.code, details: error.details } satisfies GrpcCallError);
          else resolve(value ?? Buffer.alloc(0));
        },
      );
    });
  }

  async call<I extends DescMessage, O extends DescMessage>(
    path: string,
    input: I,
    output: O,
    message: MessageInitShape<I>,
    metadata?: grpc.Metadata,
  ): Promise<MessageShape<O>> {
    const answer = await this.callRaw(path, Buffer.from(toBinary(input, create(input, message))), metadata);
    return fromBinary(output, answer);
  }

  close(): void {
    this.client.close();
  }
}

/** The status of a rejected call made with RawGrpcClient. */
export async function grpcError(promise: Promise<unknown>): Promise<GrpcCallError> {
  try {
    await promise;
  } catch (error) {
    return error as GrpcCallError;
  }
  throw new Error("expected the call to fail");
}
