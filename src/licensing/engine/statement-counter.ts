/**
 * Counts the SQL statements the engine sends, for the statement budget and for metrics. A Kysely
 * plugin sees every query built through the instance it is attached to, raw `sql` included;
 * BEGIN and COMMIT of a transaction are not queries to it, so their sender counts them.
 */
import type {
  KyselyPlugin,
  PluginTransformQueryArgs,
  PluginTransformResultArgs,
  QueryResult,
  RootOperationNode,
  UnknownRow,
} from "kysely";

export class StatementCounter implements KyselyPlugin {
  readonly #count: () => void;

  /** `count` runs once per statement, before it is sent. */
  constructor(count: () => void) {
    this.#count = count;
  }

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    this.#count();
    return args.node;
  }

  transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return Promise.resolve(args.result);
  }
}
