/** Reading the links of the documentation's markdown pages, for the link checks. */
import { dirname, join, normalize } from "node:path";

/** The targets of a markdown text's inline links and images, outside code blocks and code spans. */
export function linkTargets(markdown: string): string[] {
  const prose = markdown.replace(/^(\s*)(`{3,}|~{3,})[^\n]*\n[\s\S]*?^\1\2[^\n]*$/gm, "").replace(/`[^`\n]*`/g, "");
  return [...prose.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]!);
}

/** The file a relative link points to (relative to the page), or undefined for external links and anchors. */
export function localFile(page: string, target: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith("#")) return undefined;
  const path = decodeURIComponent(target.split("#")[0]!.split("?")[0]!);
  return normalize(join(dirname(page), path));
}
