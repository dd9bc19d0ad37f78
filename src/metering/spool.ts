/**
 * The local spool: where Report batches go, durably, while PostgreSQL is unreachable.
 *
 * Layout: `<dir>/usage-<seq>.spool` segment files, appended to in order, never rewritten. A
 * record is one Report batch:
 *
 *   u32 BE payload length | u32 BE event count | u32 BE CRC-32 of (the first 8 bytes + payload)
 *   payload: UTF-8 JSON array of PreparedEvent
 *
 * `append` resolves only after the record is written and fsync'd (and, when it created the
 * segment, after the directory is fsync'd so the file itself survives a crash). Concurrent
 * appends share one write and one fsync (group commit).
 *
 * A process only appends to segments it created; on start it opens a new one. So a record
 * torn by a crash (short header, short payload, or a CRC mismatch) can only be a segment's
 * last: replay applies every good record before it, skips the torn one with a counted warning,
 * and deletes the segment. Replay applies records oldest first and deletes a segment only
 * after every record in it was committed (a crash in between replays some records again,
 * which the idempotent insert counts as duplicates).
 */
import { mkdir, open, readdir, readFile, stat, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import type { PreparedEvent } from "./usage-store.js";

export interface SpoolLogger {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface SpoolOptions {
  /** The spool directory (created if missing), e.g. DATA_DIR/spool. */
  readonly dir: string;
  /** Most bytes the spool may hold; an append beyond it fails with SpoolFullError. */
  readonly maxBytes: number;
  /** A segment is closed and a new one started past this size. Default 16 MiB. */
  readonly segmentBytes?: number;
  readonly logger: SpoolLogger;
}

export interface SpoolStats {
  /** Events waiting in the spool. */
  readonly events: number;
  /** Bytes of the segment files. */
  readonly bytes: number;
  readonly segments: number;
  /** Batches and events appended since start. */
  readonly appendedBatches: number;
  readonly appendedEvents: number;
  /** Events replayed (committed) since start. */
  readonly replayedEvents: number;
  /** Torn or corrupt records skipped by replay since start. */
  readonly tornRecords: number;
  /** Appends refused because the spool was full. */
  readonly rejectedFull: number;
}

export class SpoolFullError extends Error {
  constructor(maxBytes: number) {
    super(`the usage spool is full (${maxBytes} bytes)`);
    this.name = "SpoolFullError";
  }
}

export interface Spool {
  /** Creates the directory and accounts for segments left by an earlier process. */
  open(): Promise<void>;
  /** Appends one batch durably. Rejects with SpoolFullError, or the file system's error. */
  append(events: readonly PreparedEvent[]): Promise<void>;
  /**
   * Applies every spooled batch in order with `apply` (which must be idempotent), deleting each
   * segment once all its records were applied. Stops at, and rejects with, the first failure of
   * `apply`; the next call resumes at that record. Resolves the events applied.
   */
  replay(apply: (events: PreparedEvent[]) => Promise<void>): Promise<number>;
  /** True while batches wait in the spool. */
  isEmpty(): boolean;
  stats(): SpoolStats;
  /** Waits for appends under way and closes the active segment. */
  close(): Promise<void>;
}

const HEADER_BYTES = 12;
const DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024;
const SEGMENT_PATTERN = /^usage-(\d{12})\.spool$/;

interface Segment {
  readonly seq: number;
  readonly path: string;
  bytes: number;
  events: number;
  /** Bytes of it already replayed (committed), from the start. */
  replayedOffset: number;
}

interface PendingAppend {
  readonly record: Buffer;
  readonly events: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export function createSpool(options: SpoolOptions): Spool {
  const segmentBytes = options.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
  const segments: Segment[] = [];
  let active: { segment: Segment; handle: FileHandle } | undefined;
  let nextSeq = 1;
  let queue: PendingAppend[] = [];
  let queuedBytes = 0;
  let writing: Promise<void> | undefined;
  const counts = { appendedBatches: 0, appendedEvents: 0, replayedEvents: 0, tornRecords: 0, rejectedFull: 0 };

  async function openSpool(): Promise<void> {
    await mkdir(options.dir, { recursive: true });
    const names = (await readdir(options.dir)).filter((n) => SEGMENT_PATTERN.test(n)).sort();
    for (const name of names) {
      const seq = Number(SEGMENT_PATTERN.exec(name)?.[1]);
      const path = join(options.dir, name);
      const bytes = (await stat(path)).size;
      const events = countEvents(await readFile(path));
      segments.push({ seq, path, bytes, events, replayedOffset: 0 });
      nextSeq = Math.max(nextSeq, seq + 1);
    }
  }

  function totalBytes(): number {
    let bytes = queuedBytes;
    for (const s of segments) bytes += s.bytes - s.replayedOffset;
    return bytes;
  }

  function append(events: readonly PreparedEvent[]): Promise<void> {
    const record = encodeRecord(events);
    if (totalBytes() + record.length > options.maxBytes) {
      counts.rejectedFull += 1;
      return Promise.reject(new SpoolFullError(options.maxBytes));
    }
    queuedBytes += record.length;
    return new Promise<void>((resolve, reject) => {
      queue.push({ record, events: events.length, resolve, reject });
      if (writing === undefined) writing = drain();
    });
  }

  /** Writes queued records, one write and one fsync per round, until the queue is empty. */
  async function drain(): Promise<void> {
    while (queue.length > 0) {
      const batch = queue;
      queue = [];
      const bytes = batch.reduce((sum, p) => sum + p.record.length, 0);
      try {
        const target = await activeSegment();
        await target.handle.write(Buffer.concat(batch.map((p) => p.record), bytes));
        await target.handle.datasync();
        target.segment.bytes += bytes;
        target.segment.events += batch.reduce((sum, p) => sum + p.events, 0);
        queuedBytes -= bytes;
        counts.appendedBatches += batch.length;
        counts.appendedEvents += batch.reduce((sum, p) => sum + p.events, 0);
        for (const p of batch) p.resolve();
        if (target.segment.bytes >= segmentBytes) await sealActive();
      } catch (error) {
        queuedBytes -= bytes;
        // The segment may end in a partial record now: never append after it.
        await sealActive().catch(() => undefined);
        options.logger.error({ err: error, batches: batch.length }, "could not write to the usage spool");
        for (const p of batch) p.reject(error);
      }
    }
    writing = undefined;
  }

  async function activeSegment(): Promise<{ segment: Segment; handle: FileHandle }> {
    if (active !== undefined) return active;
    const seq = nextSeq;
    nextSeq += 1;
    const path = join(options.dir, `usage-${String(seq).padStart(12, "0")}.spool`);
    const handle = await open(path, "a");
    await syncDirectory(options.dir);
    const segment: Segment = { seq, path, bytes: 0, events: 0, replayedOffset: 0 };
    segments.push(segment);
    active = { segment, handle };
    return active;
  }

  async function sealActive(): Promise<void> {
    const current = active;
    active = undefined;
    await current?.handle.close();
  }

  async function replay(apply: (events: PreparedEvent[]) => Promise<void>): Promise<number> {
    let applied = 0;
    while (segments.length > 0) {
      const segment = segments[0];
      if (segment === undefined) break;
      if (active?.segment === segment) {
        // Appends under way finish first; later ones go to a new segment.
        await writing;
        if (active?.segment === segment) await sealActive();
      }
      applied += await replaySegment(segment, apply);
      await unlink(segment.path);
      await syncDirectory(options.dir);
      segments.shift();
    }
    return applied;
  }

  async function replaySegment(segment: Segment, apply: (events: PreparedEvent[]) => Promise<void>): Promise<number> {
    const data = await readFile(segment.path);
    let applied = 0;
    while (segment.replayedOffset < data.length) {
      const decoded = decodeRecord(data, segment.replayedOffset);
      if (decoded.kind === "torn") {
        counts.tornRecords += 1;
        options.logger.warn(
          { segment: segment.path, offset: segment.replayedOffset, skippedBytes: data.length - segment.replayedOffset, why: decoded.why },
          "skipped a torn record at the end of a usage spool segment (a crash while it was written: it was never acknowledged)",
        );
        segment.replayedOffset = data.length;
        break;
      }
      await apply(decoded.events);
      segment.replayedOffset = decoded.end;
      segment.events -= decoded.events.length;
      applied += decoded.events.length;
      counts.replayedEvents += decoded.events.length;
    }
    return applied;
  }

  function stats(): SpoolStats {
    let events = 0;
    for (const s of segments) events += s.events;
    for (const p of queue) events += p.events;
    return { events, bytes: totalBytes(), segments: segments.length, ...counts };
  }

  async function close(): Promise<void> {
    await writing;
    await sealActive();
  }

  return {
    open: openSpool,
    append,
    replay,
    isEmpty: () => segments.length === 0 && queue.length === 0,
    stats,
    close,
  };
}

/** One record: header and JSON payload. */
export function encodeRecord(events: readonly PreparedEvent[]): Buffer {
  const payload = Buffer.from(JSON.stringify(events), "utf8");
  const record = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  record.writeUInt32BE(payload.length, 0);
  record.writeUInt32BE(events.length, 4);
  payload.copy(record, HEADER_BYTES);
  record.writeUInt32BE(crc32(payload, crc32(record.subarray(0, 8))), 8);
  return record;
}

type Decoded =
  | { readonly kind: "record"; readonly events: PreparedEvent[]; readonly end: number }
  | { readonly kind: "torn"; readonly why: string };

/** The record at `offset`, or why what is there is not a whole, intact record. */
export function decodeRecord(data: Buffer, offset: number): Decoded {
  if (data.length - offset < HEADER_BYTES) return { kind: "torn", why: "short header" };
  const length = data.readUInt32BE(offset);
  const count = data.readUInt32BE(offset + 4);
  const end = offset + HEADER_BYTES + length;
  if (end > data.length) return { kind: "torn", why: "short payload" };
  const payload = data.subarray(offset + HEADER_BYTES, end);
  if (crc32(payload, crc32(data.subarray(offset, offset + 8))) !== data.readUInt32BE(offset + 8)) {
    return { kind: "torn", why: "checksum mismatch" };
  }
  const events = JSON.parse(payload.toString("utf8")) as PreparedEvent[];
  if (!Array.isArray(events) || events.length !== count) return { kind: "torn", why: "event count mismatch" };
  return { kind: "record", events, end };
}

/** Events in a segment's intact records (a torn tail counts none). */
function countEvents(data: Buffer): number {
  let events = 0;
  for (let offset = 0; offset < data.length; ) {
    if (data.length - offset < HEADER_BYTES) break;
    const length = data.readUInt32BE(offset);
    if (offset + HEADER_BYTES + length > data.length) break;
    events += data.readUInt32BE(offset + 4);
    offset += HEADER_BYTES + length;
  }
  return events;
}

/** fsyncs a directory so a created or deleted entry in it survives a crash. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
