/**
 * Errors in a rules document: every problem found, each naming where it is.
 */

/** One problem, e.g. `{ path: "licenses[2].plan", message: 'unknown plan "gold"' }`. */
export interface RuleIssue {
  /** Dotted path with [index] into the document; "" for the document as a whole. */
  readonly path: string;
  readonly message: string;
  /** 1-based position in the source text, when the document was parsed from text. */
  readonly line?: number;
  readonly column?: number;
}

/** Renders one issue as a line: `licenses[2].plan: unknown plan "gold"`. */
export function formatRuleIssue(issue: RuleIssue): string {
  return `${issue.path === "" ? "document" : issue.path}: ${issue.message}`;
}

/**
 * Thrown when a rules document is invalid; carries every issue found, not just the first.
 * Nothing has been written when this is thrown. The admin API maps it to INVALID_ARGUMENT with
 * one line per issue (the `message` is exactly those lines).
 */
export class RulesError extends Error {
  readonly issues: readonly RuleIssue[];

  constructor(issues: readonly RuleIssue[]) {
    super(issues.map(formatRuleIssue).join("\n"));
    this.name = "RulesError";
    this.issues = issues;
  }

  /** One line per issue, in document order. */
  lines(): string[] {
    return this.issues.map(formatRuleIssue);
  }
}
