/**
 * Text → validated rules document. YAML and JSON are both accepted (JSON is YAML 1.2).
 */
import { isNode, LineCounter, parseDocument, type Document } from "yaml";
import { RulesError, type RuleIssue } from "./errors.js";
import { MAX_RULES_DOCUMENT_BYTES, type RulesDocument } from "./types.js";
import { validateRules } from "./validate.js";

/**
 * Parses and validates a rules document.
 *
 * Returns the normalized document (see types.ts). Throws `RulesError` carrying every problem
 * found: a document over 4 MiB, YAML syntax errors (all of them, with line and column, e.g.
 * `document: line 4, column 5: Map keys must be unique`), or validation issues (each with the
 * line and column of the offending node when it can be found). Duplicate mapping keys are
 * syntax errors, so a repeated key never silently overrides an earlier one.
 */
export function parseRules(text: string): RulesDocument {
  const size = Buffer.byteLength(text, "utf8");
  if (size > MAX_RULES_DOCUMENT_BYTES) {
    throw new RulesError([{ path: "", message: `is ${size} bytes; the limit is ${MAX_RULES_DOCUMENT_BYTES} bytes (4 MiB)` }]);
  }
  const lineCounter = new LineCounter();
  // intAsBigInt: integers beyond 2^53 must be reported by the validator, not rounded here.
  const doc = parseDocument(text, { intAsBigInt: true, lineCounter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) throw new RulesError(doc.errors.map(syntaxIssue));
  const result = validateRules(toPlainData(doc));
  if (!result.ok) throw new RulesError(result.issues.map((issue) => locate(doc, lineCounter, issue)));
  return result.document;
}

/**
 * The document as plain data. maxAliasCount bounds alias expansion ("billion laughs") in a
 * document from the network; exceeding it is the document's fault, so it is a RulesError.
 */
function toPlainData(doc: Document): unknown {
  try {
    return doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new RulesError([{ path: "", message: `cannot be expanded: ${reason}` }]);
  }
}

interface YamlErrorLike {
  readonly message: string;
  readonly linePos?: readonly [{ line: number; col: number }] | readonly [{ line: number; col: number }, { line: number; col: number }];
}

function syntaxIssue(error: YamlErrorLike): RuleIssue {
  // With prettyErrors the message is "<what> at line L, column C:\n\n<excerpt>"; keep <what>.
  const what = error.message.split(/ at line \d+, column \d+/)[0]?.trim() ?? error.message;
  const pos = error.linePos?.[0];
  if (pos === undefined) return { path: "", message: `YAML syntax error: ${what}` };
  return { path: "", message: `line ${pos.line}, column ${pos.col}: ${what}`, line: pos.line, column: pos.col };
}

/** Adds the source position of the nearest existing node on the issue's path. */
function locate(doc: Document, lineCounter: LineCounter, issue: RuleIssue): RuleIssue {
  const segments = pathSegments(issue.path);
  while (segments.length > 0) {
    const node = doc.getIn(segments, true);
    if (isNode(node) && node.range !== undefined && node.range !== null) {
      const pos = lineCounter.linePos(node.range[0]);
      return { ...issue, line: pos.line, column: pos.col };
    }
    segments.pop();
  }
  return issue;
}

/** "licenses[2].plan" → ["licenses", 2, "plan"]. */
function pathSegments(path: string): Array<string | number> {
  const segments: Array<string | number> = [];
  for (const match of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) {
    if (match[2] !== undefined) segments.push(Number(match[2]));
    else if (match[1] !== undefined) segments.push(match[1]);
  }
  return segments;
}
