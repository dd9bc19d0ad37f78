/**
 * LicensingService.Report: validate each event on its own, make the valid ones durable
 * (PostgreSQL, or the local spool while it is unreachable), and account for every event:
 * accepted + duplicates + len(rejected) == len(events).
 *
 * Answers only once the events are durable. Errors: INVALID_ARGUMENT for more than 1000
 * events; UNAVAILABLE when PostgreSQL is unreachable and the spool is full (or cannot be
 * written): nothing of the batch was acknowledged, the caller retries.
 */
import { create } from "@bufbuild/protobuf";
import {
  RejectedSchema,
  ReportResponseSchema,
  type Rejected,
  type ReportRequestSchema,
  type ReportResponse,
  type ReportResponseSchema as ReportResponseDesc,
} from "../gen/licensing/v1/licensing_pb.js";
import { invalidArgument, unavailable } from "../server/errors.js";
import type { UnaryHandler } from "../server/rpc.js";
import { isPromise, type MaybePromise } from "../licensing/sync.js";
import { MAX_EVENTS_PER_REPORT, prepareEvent, type EventOutcome, type EventValidationDeps } from "./report-events.js";
import { SpoolFullError } from "./spool.js";
import type { UsageRecorder } from "./usage-recorder.js";
import type { PreparedEvent } from "./usage-store.js";

export interface ReportDeps extends EventValidationDeps {
  readonly recorder: Pick<UsageRecorder, "record">;
  /** Epoch ms. */
  readonly now: () => number;
}

export function createReportHandler(deps: ReportDeps): UnaryHandler<typeof ReportRequestSchema, typeof ReportResponseDesc> {
  return async function report(request, context) {
    if (request.events.length > MAX_EVENTS_PER_REPORT) throw invalidArgument("events", `at most ${MAX_EVENTS_PER_REPORT}`);
    const nowMs = deps.now();
    const outcomes = await allOf(request.events.map((event, index) => prepareEvent(deps, event, index, context, nowMs)));

    const events: PreparedEvent[] = [];
    const rejected: Rejected[] = [];
    outcomes.forEach((outcome, index) => {
      if ("event" in outcome) events.push(outcome.event);
      else rejected.push(create(RejectedSchema, { index, reason: outcome.rejected }));
    });
    if (events.length === 0) return response(0, 0, rejected);

    try {
      const { accepted, duplicates } = await deps.recorder.record(events);
      return response(accepted, duplicates, rejected);
    } catch (error) {
      if (error instanceof SpoolFullError) {
        throw unavailable("usage cannot be recorded now: the database is unreachable and the local spool is full; retry later", error);
      }
      throw unavailable("usage cannot be recorded now: the database failed and the batch was not recorded; retry", error);
    }
  };
}

function response(accepted: number, duplicates: number, rejected: Rejected[]): ReportResponse {
  return create(ReportResponseSchema, { accepted, duplicates, rejected });
}

/** The outcomes in order; waits only when some event needed a lookup. */
async function allOf(outcomes: MaybePromise<EventOutcome>[]): Promise<EventOutcome[]> {
  return outcomes.some(isPromise) ? Promise.all(outcomes) : (outcomes as EventOutcome[]);
}
