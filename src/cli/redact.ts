/**
 * Passwords in connection strings, found in the text itself rather than through
 * a URL parser: a password holding `/`, `?`, `#` or `@` makes the parser read
 * part of it as the host, port or path (and then echo it back), so whatever it
 * makes of the string cannot be what decides what to hide. Whatever the shape
 * (a URL, a scheme-less `user:password@host`, a libpq `key=value` string, a
 * `?password=` parameter, percent-encoded keys), every password-like part is
 * found here, generously: hiding too much costs a less helpful message, hiding
 * too little costs a leaked secret.
 */

interface Range {
  start: number;
  end: number;
}

const SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;
// key=value: a URL query parameter or a libpq setting; a value is single-quoted
// (backslash escapes) or runs to the next space or '&'.
const PARAMETER = /([^\s&?=;]+)(\s*=\s*)('(?:\\[^]|[^'\\])*'?|(?:\\[^]|[^\s&\\])*)/g;

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function secretKey(key: string): boolean {
  return /pass|secret|token/i.test(decode(key));
}

/** Where the passwords are in `text`. */
function secretRanges(text: string): Range[] {
  const ranges: Range[] = [];
  // The userinfo: everything up to the LAST '@' (a password may hold '@', '/', '?', '#'), password after its first ':'.
  const scheme = SCHEME.exec(text);
  const start = scheme ? scheme[0].length : 0;
  const at = text.lastIndexOf("@");
  if (at > start && (scheme || !/[\s=]/.test(text))) {
    const colon = text.indexOf(":", start);
    if (colon >= 0 && colon < at) ranges.push({ start: colon + 1, end: at });
  }
  for (const match of text.matchAll(PARAMETER)) {
    const [, key, separator, value] = match;
    if (!secretKey(key!) || value === "") continue;
    const valueStart = match.index + key!.length + separator!.length;
    ranges.push({ start: valueStart, end: valueStart + value!.length });
  }
  return ranges;
}

/** `text` with every password in it replaced by `***`. */
export function maskSecrets(text: string): string {
  const ranges = secretRanges(text).sort((a, b) => a.start - b.start);
  let out = "";
  let from = 0;
  for (const { start, end } of ranges) {
    if (start < from) {
      from = Math.max(from, end);
      continue;
    }
    out += text.slice(from, start) + "***";
    from = end;
  }
  return out + text.slice(from);
}

/**
 * The passwords in `text` as they may appear in a message: as written, unquoted
 * and percent-decoded. For scrubbing text that may echo them (an unexpected error).
 */
export function secretsIn(text: string): string[] {
  const found = new Set<string>();
  for (const { start, end } of secretRanges(text)) {
    const raw = text.slice(start, end);
    const unquoted = raw.startsWith("'")
      ? raw.slice(1, raw.endsWith("'") && raw.length > 1 ? -1 : undefined).replace(/\\(.)/g, "$1")
      : raw;
    for (const form of [raw, unquoted, decode(unquoted)]) if (form.length > 0) found.add(form);
  }
  return [...found];
}

/**
 * `text` with every occurrence of the secrets replaced by `***`, longest first.
 * An occurrence inside a longer word is not one (a password "x" leaves
 * "unexpected" alone): the echo of a connection string delimits its password.
 */
export function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of [...secrets].sort((a, b) => b.length - a.length)) {
    const escaped = secret.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    out = out.replace(new RegExp(`(?<![A-Za-z0-9])${escaped}(?![A-Za-z0-9])`, "g"), "***");
  }
  return out;
}
