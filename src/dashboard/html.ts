/**
 * HTML building with escaping by default: `html` is a tagged template whose
 * interpolations are escaped unless they are themselves `html` (a `Safe`).
 * Payloads, names and errors reach a page only through it, so no stored value
 * is ever read as markup.
 */

/** Markup that was built by `html` (or is a constant): inserted as is. */
export class Safe {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Text as HTML text or attribute value. */
export function esc(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

type Part = Safe | string | number | boolean | null | undefined | readonly Part[];

function render(part: Part): string {
  if (part === null || part === undefined || part === false) return "";
  if (part instanceof Safe) return part.text;
  if (Array.isArray(part)) return (part as readonly Part[]).map(render).join("");
  return esc(part);
}

export function html(strings: TemplateStringsArray, ...values: Part[]): Safe {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) out += render(values[i]!) + strings[i + 1]!;
  return new Safe(out);
}

/** Trusted markup (an SVG the server drew with escaped names, say). */
export const raw = (text: string) => new Safe(text);

/** Serialized JSON larger than this is shown as text, not as a tree. */
const MAX_TREE_CHARS = 200_000;

/**
 * A JSON value as a collapsible tree: objects and arrays are <details>, open to
 * `openDepth`. Keys and values are text.
 */
export function jsonTree(value: unknown, openDepth = 2): Safe {
  let text: string;
  try {
    text = JSON.stringify(value, null, 2) ?? "undefined";
  } catch {
    text = String(value);
  }
  if (text.length > MAX_TREE_CHARS)
    return html`<pre class="json">
${text.slice(0, MAX_TREE_CHARS)}
… (${text.length} characters)</pre>`;
  return html`<div class="json">${node(value, 0, openDepth)}</div>`;
}

function node(value: unknown, depth: number, openDepth: number): Safe {
  if (value === null) return html`<span class="j-null">null</span>`;
  if (typeof value === "string") return html`<span class="j-str">${JSON.stringify(value)}</span>`;
  if (typeof value === "number" || typeof value === "boolean") return html`<span class="j-lit">${String(value)}</span>`;
  if (Array.isArray(value)) {
    if (value.length === 0) return html`<span class="j-lit">[]</span>`;
    return html`<details ${depth < openDepth ? raw("open") : ""}>
      <summary>[${value.length} item${value.length === 1 ? "" : "s"}]</summary>
      <ul>
        ${value.map((v, i) => html`<li><span class="j-key">${i}</span>: ${node(v, depth + 1, openDepth)}</li>`)}
      </ul>
    </details>`;
  }
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0) return html`<span class="j-lit">{}</span>`;
    return html`<details ${depth < openDepth ? raw("open") : ""}>
      <summary>{${entries.length} key${entries.length === 1 ? "" : "s"}}</summary>
      <ul>
        ${entries.map(
          ([k, v]) => html`<li><span class="j-key">${JSON.stringify(k)}</span>: ${node(v, depth + 1, openDepth)}</li>`,
        )}
      </ul>
    </details>`;
  }
  return html`<span>${String(value)}</span>`;
}
