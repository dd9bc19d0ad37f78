/**
 * Checks the decision log's hash chains: recomputes every row's hash (chain.ts says how) and
 * checks that seq runs without gaps and that each prev_hash is the previous row's hash.
 *
 * It finds a changed row (its hash no longer matches), a deleted row (a gap in seq), and rows
 * moved or slipped in (a hash or prev_hash mismatch). It cannot see rows cut off the end of a
 * chain, or a chain recomputed end to end; see chain.ts.
 *
 * Reads in pages by (replica_id, seq), the primary key, so memory stays flat on a large table.
 */
import type { Kysely } from "kysely";
import type { Database } from "../../store/schema.js";
import { chainHash, type ChainRow } from "./chain.js";

export interface VerifyOptions {
  /** Only this replica's chain. Default: every replica in the table. */
  replicaId?: string;
  /**
   * Only rows from the first row with time >= `from` to the last row with time < `to`, by seq.
   * The row before that range is checked too, as the anchor its first prev_hash must match.
   */
  from?: Date;
  to?: Date;
}

export interface ReplicaVerdict {
  replicaId: string;
  /** Rows checked, up to and including the first bad one. */
  rows: number;
  /** The first seq where the chain breaks; absent when the chain checks out. */
  firstBadSeq?: number;
  /** What is wrong at firstBadSeq, for a person. */
  problem?: string;
}

export interface VerifyReport {
  replicas: ReplicaVerdict[];
}

/** Rows read per query. */
const PAGE_ROWS = 5000;

/** Verifies each replica's chain in turn. Throws only when the database does (a query fails). */
export async function verifyDecisionLog(db: Kysely<Database>, options: VerifyOptions = {}): Promise<VerifyReport> {
  const replicaIds = options.replicaId !== undefined ? [options.replicaId] : await listReplicas(db);
  const replicas: ReplicaVerdict[] = [];
  for (const replicaId of replicaIds) replicas.push(await verifyReplica(db, replicaId, options));
  return { replicas };
}

async function listReplicas(db: Kysely<Database>): Promise<string[]> {
  const rows = await db.selectFrom("decision_log").select("replica_id").distinct().orderBy("replica_id").execute();
  return rows.map((row) => row.replica_id);
}

/** Inclusive seq bounds of the rows to check; undefined when the range holds no row. */
interface SeqRange {
  first: number;
  last: number;
}

async function seqRange(db: Kysely<Database>, replicaId: string, options: VerifyOptions): Promise<SeqRange | undefined> {
  let query = db
    .selectFrom("decision_log")
    .select((eb) => [eb.fn.min("seq").as("first"), eb.fn.max("seq").as("last")])
    .where("replica_id", "=", replicaId);
  if (options.from !== undefined) query = query.where("time", ">=", options.from);
  if (options.to !== undefined) query = query.where("time", "<", options.to);
  const row = await query.executeTakeFirst();
  if (row?.first == null || row.last == null) return undefined;
  // Without a lower time bound the chain must start at seq 1, so missing first rows show.
  return { first: options.from === undefined ? 1 : Number(row.first), last: Number(row.last) };
}

async function verifyReplica(db: Kysely<Database>, replicaId: string, options: VerifyOptions): Promise<ReplicaVerdict> {
  const range = await seqRange(db, replicaId, options);
  if (range === undefined) return { replicaId, rows: 0 };
  // A range that starts mid-chain starts one row early: that row's hash is checked, and its
  // prev_hash (whose row lies outside the range) is taken as given.
  const startSeq = range.first > 1 ? range.first - 1 : 1;
  const walker = createChainWalker(replicaId, startSeq, startSeq > 1);
  let after = startSeq - 1;
  for (;;) {
    const page = await db
      .selectFrom("decision_log")
      .selectAll()
      .where("replica_id", "=", replicaId)
      .where("seq", ">", after)
      .where("seq", "<=", range.last)
      .orderBy("seq")
      .limit(PAGE_ROWS)
      .execute();
    for (const row of page) {
      const problem = walker.next(row);
      if (problem !== undefined) return { replicaId, rows: walker.rows, ...problem };
    }
    const last = page.at(-1);
    if (last === undefined || page.length < PAGE_ROWS) break;
    after = last.seq;
  }
  if (walker.expectedSeq <= range.last) {
    return { replicaId, rows: walker.rows, firstBadSeq: walker.expectedSeq, problem: missing(walker.expectedSeq) };
  }
  return { replicaId, rows: walker.rows };
}

interface Problem {
  firstBadSeq: number;
  problem: string;
}

type StoredRow = {
  replica_id: string;
  seq: number;
  decision_id: string | null;
  time: Date;
  license_id: string | null;
  feature: string;
  decision: "allow" | "deny";
  reason: string;
  quantity: number;
  count: number;
  prev_hash: string;
  hash: string;
};

/** Walks one chain row by row, in seq order; reports the first problem. */
function createChainWalker(replicaId: string, firstSeq: number, trustFirstPrevHash: boolean) {
  let expectedSeq = firstSeq;
  let prevHash: string | undefined = trustFirstPrevHash ? undefined : "";
  let rows = 0;
  return {
    get rows() {
      return rows;
    },
    get expectedSeq() {
      return expectedSeq;
    },
    next(row: StoredRow): Problem | undefined {
      rows += 1;
      if (row.seq !== expectedSeq) return { firstBadSeq: expectedSeq, problem: `${missing(expectedSeq)} (the next row is seq ${row.seq})` };
      if (prevHash !== undefined && row.prev_hash !== prevHash) {
        return { firstBadSeq: row.seq, problem: `prev_hash of seq ${row.seq} is not the hash of seq ${row.seq - 1}` };
      }
      if (chainHash(row.prev_hash, chainRow(replicaId, row)) !== row.hash) {
        return { firstBadSeq: row.seq, problem: `seq ${row.seq} does not match its hash (the row was changed)` };
      }
      expectedSeq += 1;
      prevHash = row.hash;
      return undefined;
    },
  };
}

function chainRow(replicaId: string, row: StoredRow): ChainRow {
  return {
    replicaId,
    seq: row.seq,
    decisionId: row.decision_id,
    timeMs: row.time.getTime(),
    licenseId: row.license_id,
    feature: row.feature,
    decision: row.decision,
    reason: row.reason,
    quantity: row.quantity,
    count: row.count,
  };
}

function missing(seq: number): string {
  return `seq ${seq} is missing`;
}
