/**
 * A TCP proxy between the service and PostgreSQL that counts round trips on the wire: every
 * frontend Query ('Q', simple protocol) and every Sync ('S', which ends an extended-protocol
 * Parse/Bind/Execute batch and makes the server answer) is one round trip. BEGIN and COMMIT
 * sent as their own statements count, as they cost a round trip each.
 *
 * It parses only the client-to-server direction, only message boundaries: the startup packet
 * (no type byte; an SSLRequest or GSSENCRequest may precede it), then `type (1) | length (4,
 * includes itself) | payload`. Nothing is changed or logged; payloads may hold credentials.
 */
import { createServer, connect, type Server, type Socket } from "node:net";

/** Frontend codes of the requests that precede a real startup packet. */
const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;

export interface RoundTripCounter {
  readonly port: number;
  /** Round trips (Query + Sync messages) sent by all connections so far. */
  roundTrips(): number;
  close(): Promise<void>;
}

/** Counts message boundaries in one client-to-server byte stream. */
export class FrontendStreamParser {
  #buffer: Buffer = Buffer.alloc(0);
  #startup = true;
  #roundTrips = 0;

  get roundTrips(): number {
    return this.#roundTrips;
  }

  push(chunk: Buffer): void {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    for (;;) {
      if (this.#startup) {
        if (this.#buffer.length < 8) return;
        const length = this.#buffer.readUInt32BE(0);
        if (this.#buffer.length < length) return;
        const code = this.#buffer.readUInt32BE(4);
        // After an SSL/GSS request the client sends the startup packet next; a cancel ends it.
        if (code !== SSL_REQUEST && code !== GSSENC_REQUEST && code !== CANCEL_REQUEST) this.#startup = false;
        this.#buffer = this.#buffer.subarray(length);
        continue;
      }
      if (this.#buffer.length < 5) return;
      const length = this.#buffer.readUInt32BE(1);
      if (this.#buffer.length < 1 + length) return;
      const type = this.#buffer[0];
      if (type === 0x51 /* Q */ || type === 0x53 /* S */) this.#roundTrips += 1;
      this.#buffer = this.#buffer.subarray(1 + length);
    }
  }
}

/** Listens on a free port and forwards every connection to `target`. */
export async function createRoundTripCounter(target: { host: string; port: number }): Promise<RoundTripCounter> {
  const parsers = new Set<FrontendStreamParser>();
  let closedTrips = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    const parser = new FrontendStreamParser();
    parsers.add(parser);
    sockets.add(client);
    sockets.add(upstream);
    client.on("data", (chunk: Buffer) => {
      parser.push(chunk);
      upstream.write(chunk);
    });
    upstream.pipe(client);
    const end = () => {
      if (parsers.delete(parser)) closedTrips += parser.roundTrips;
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("close", end);
    upstream.on("close", end);
    // A reset on either side ends both; the service sees a dropped connection as it would anyway.
    client.on("error", end);
    upstream.on("error", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return {
    port,
    roundTrips() {
      let total = closedTrips;
      for (const parser of parsers) total += parser.roundTrips;
      return total;
    },
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
