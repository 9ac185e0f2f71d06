/**
 * Reading the YAML text of a config file: syntax errors, duplicate keys, alias
 * bombs and a top level that is not a mapping become {@link ConfigError}s that
 * name the file and line. Keeps the parsed document so that any later problem
 * can be mapped from its path back to a line.
 */
import { isMap, isScalar, isSeq, isAlias, LineCounter, parseDocument, type Document, type YAMLError } from 'yaml';
import { ConfigError, type ConfigIssue } from '../errors/index.js';

export type PathSegment = string | number;

/** Most aliases a file may expand; a "billion laughs" file needs far more. */
export const MAX_ALIAS_COUNT = 100;

export interface ConfigSource {
  /** The file name used in messages. */
  fileName: string;
  /** The document as plain data (a mapping at the top level). */
  data: Record<string, unknown>;
  /** 1-based line of the node at `path`, or of its nearest ancestor found. */
  lineOf(path: readonly PathSegment[]): number | undefined;
}

const SYNTAX_FIXES: Partial<Record<YAMLError['code'], string>> = {
  TAB_AS_INDENT: 'indent with spaces, not tabs',
  BAD_INDENT: 'line the keys of one mapping up in the same column, indenting with spaces',
  DUPLICATE_KEY: 'remove or rename one of the two keys with the same name',
  MULTIPLE_DOCS: 'keep one YAML document in the file (remove the extra "---")',
  BLOCK_AS_IMPLICIT_KEY: 'put the nested mapping on its own indented lines, or quote the value',
  MISSING_CHAR: 'close the quote or bracket that was opened',
  MULTILINE_IMPLICIT_KEY: 'quote the value, or put the key on one line',
  BAD_ALIAS: 'define the anchor (&name) before using it (*name)',
};

/**
 * Parse YAML text into a {@link ConfigSource}.
 * @throws ConfigError for syntax errors, an empty file, or a top level that is not a mapping.
 */
export function readSource(text: string, fileName: string): ConfigSource {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true, merge: true, strict: true });
  if (doc.errors.length > 0) throw syntaxError(doc.errors, fileName, text);

  const lineAt = (offset: number | undefined): number | undefined =>
    offset === undefined ? undefined : lineCounter.linePos(offset).line;
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    throw new ConfigError(`${fileName} expands too many YAML aliases`, [
      { path: '', problem: `aliases (*name) expand to more than ${MAX_ALIAS_COUNT} copies, which looks like a resource exhaustion attack`, fix: 'write the repeated parts out, or use fewer aliases' },
    ], { cause: err, fix: 'write the repeated parts out, or use fewer aliases', details: { file: fileName } });
  }
  if (data === null || data === undefined) {
    throw topLevelError(fileName, 'the file is empty', 'start the file with "version: 1"; see cordon.example.yaml');
  }
  if (Array.isArray(data)) {
    throw topLevelError(fileName, 'the top level is a list, but it must be a mapping', 'remove the leading "- " and start the file with "version: 1"', 1 + countLeadingBlankLines(text));
  }
  if (typeof data !== 'object') {
    throw topLevelError(fileName, `the top level is a single value (${JSON.stringify(data)}), but it must be a mapping`, 'start the file with "version: 1" followed by agents:, secrets: …', 1 + countLeadingBlankLines(text));
  }

  return {
    fileName,
    data: data as Record<string, unknown>,
    lineOf: (path) => lineOfPath(doc, path, lineAt),
  };
}

function lineOfPath(
  doc: Document.Parsed,
  path: readonly PathSegment[],
  lineAt: (offset: number | undefined) => number | undefined,
): number | undefined {
  let node: unknown = doc.contents;
  let line = lineAt((node as { range?: [number] } | null)?.range?.[0]);
  for (const segment of path) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => keyText(p.key) === String(segment));
      if (!pair) break;
      line = lineAt((pair.key as { range?: [number] } | null)?.range?.[0]) ?? line;
      node = pair.value;
    } else if (isSeq(node) && typeof segment === 'number') {
      const item = node.items[segment];
      if (!item) break;
      line = lineAt((item as { range?: [number] }).range?.[0]) ?? line;
      node = item;
    } else {
      break;
    }
  }
  return line;
}

function keyText(key: unknown): string {
  return isScalar(key) ? String(key.value) : String(key);
}

function countLeadingBlankLines(text: string): number {
  const lines = text.split('\n');
  let n = 0;
  while (n < lines.length && /^\s*(#.*)?$/.test(lines[n]!)) n++;
  return n;
}

function topLevelError(fileName: string, problem: string, fix: string, line?: number): ConfigError {
  const issue: ConfigIssue = { path: '', problem, fix, ...(line ? { line } : {}) };
  return new ConfigError(`${fileName} is invalid: ${problem}`, [issue], { fix, details: { file: fileName } });
}

/** The YAML library's message, reworded where it speaks of its own API or says too little. */
function syntaxProblem(e: YAMLError, text: string): string {
  if (e.code === 'DUPLICATE_KEY') {
    const key = text.slice(e.pos[0]).split(/[:\n]/)[0]?.trim().replace(/^["']|["']$/g, '');
    return key ? `the key "${key}" appears twice in the same mapping` : 'a key appears twice in the same mapping';
  }
  if (e.code === 'MULTIPLE_DOCS') return 'the file contains more than one YAML document';
  return e.message.replace(/ at line \d+, column \d+:[\s\S]*$/, '').trim();
}

function syntaxFix(e: YAMLError): string {
  const unclosed = /end with an? ([\]}])/.exec(e.message);
  if (unclosed) return `close the ${unclosed[1] === ']' ? '"[" with "]"' : '"{" with "}"'} opened earlier, and indent its lines with spaces`;
  return SYNTAX_FIXES[e.code] ?? 'check the YAML syntax here: indent with spaces, and quote values that contain ": " or " #"';
}

function syntaxError(errors: readonly YAMLError[], fileName: string, text: string): ConfigError {
  const issues: ConfigIssue[] = errors.map((e) => {
    const problem = syntaxProblem(e, text);
    const fix = syntaxFix(e);
    return { path: '', problem, fix, ...(e.linePos ? { line: e.linePos[0].line } : {}) };
  });
  const first = errors[0]!;
  const where = first.linePos ? `line ${first.linePos[0].line}, column ${first.linePos[0].col}` : 'an unknown position';
  const firstIssue = issues[0]!;
  return new ConfigError(`${fileName} is not valid YAML: ${firstIssue.problem} at ${where}`, issues, {
    fix: firstIssue.fix,
    details: { file: fileName, ...(first.linePos ? { line: first.linePos[0].line, column: first.linePos[0].col } : {}) },
  });
}
