/**
 * Secret references in config strings: `{{secret.NAME}}`. They may appear in
 * egress header templates, provider API keys and agent env values; the secrets
 * layer replaces them (with the real value on the host side, with a placeholder
 * inside the guest). Any other `{{…}}` is a mistake and is reported.
 */

/** Names of secrets: a letter or `_`, then letters, digits, `_` or `-`. */
export const SECRET_NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;

const REFERENCE = /\{\{\s*secret\.([A-Za-z_][A-Za-z0-9_-]{0,63})\s*\}\}/g;
const ANY_TEMPLATE = /\{\{(.*?)\}\}/g;

export interface TemplateScan {
  /** Secret names referenced, in order of appearance (duplicates kept once). */
  secrets: string[];
  /** `{{…}}` expressions that are not secret references, verbatim. */
  malformed: string[];
}

/**
 * Find the secret references in a string, and any `{{…}}` that is not one.
 * @example
 * scanTemplate('Bearer {{secret.github_token}}') // { secrets: ['github_token'], malformed: [] }
 */
export function scanTemplate(text: string): TemplateScan {
  const secrets: string[] = [];
  const malformed: string[] = [];
  for (const m of text.matchAll(ANY_TEMPLATE)) {
    const whole = m[0];
    REFERENCE.lastIndex = 0;
    const ref = REFERENCE.exec(whole);
    if (ref && ref[0] === whole) {
      if (!secrets.includes(ref[1]!)) secrets.push(ref[1]!);
    } else {
      malformed.push(whole);
    }
  }
  const unclosed = text.replace(ANY_TEMPLATE, '');
  if (unclosed.includes('{{')) malformed.push(unclosed.slice(unclosed.indexOf('{{')));
  return { secrets, malformed };
}

/**
 * Replace each `{{secret.NAME}}` with `lookup(NAME)`.
 * @param lookup returns the replacement (a real value or a placeholder).
 */
export function renderTemplate(text: string, lookup: (name: string) => string): string {
  return text.replace(REFERENCE, (_whole, name: string) => lookup(name));
}
