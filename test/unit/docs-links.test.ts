/**
 * The documentation's map holds: every guide in docs/ is linked from the README, and every
 * relative link in README.md and docs/*.md points to a file that exists (anchors and external
 * links are not checked here; the API reference's links are checked by `npm run docs:check`).
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const guides = readdirSync(join(root, "docs"))
  .filter((f) => f.endsWith(".md"))
  .sort();

/** The targets of a markdown text's inline links and images, outside code blocks and code spans. */
export function linkTargets(markdown: string): string[] {
  const prose = markdown.replace(/^(\s*)(`{3,}|~{3,})[^\n]*\n[\s\S]*?^\1\2[^\n]*$/gm, "").replace(/`[^`\n]*`/g, "");
  return [...prose.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]!);
}

/** The file a relative link points to (relative to the page), or undefined for external links and anchors. */
function localFile(page: string, target: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith("#")) return undefined;
  const path = decodeURIComponent(target.split("#")[0]!.split("?")[0]!);
  return normalize(join(dirname(page), path));
}

describe("documentation links", () => {
  const readme = linkTargets(readFileSync(join(root, "README.md"), "utf8"))
    .map((t) => localFile("README.md", t))
    .filter((f): f is string => f !== undefined);

  it.each(guides)("README.md links docs/%s", (guide) => {
    expect(readme, `docs/${guide} is not linked from README.md`).toContain(join("docs", guide));
  });

  it.each(["README.md", ...guides.map((g) => `docs/${g}`)])("every relative link in %s exists", (page) => {
    const missing = linkTargets(readFileSync(join(root, page), "utf8"))
      .map((target) => ({ target, file: localFile(page, target) }))
      .filter(({ file }) => file !== undefined && !existsSync(join(root, file)))
      .map(({ target }) => target);
    expect(missing, `${page} links to missing files`).toEqual([]);
  });

  it("reads links, skipping code and external targets", () => {
    const md = "[a](docs/a.md) and `[b](b.md)`\n```md\n[c](c.md)\n```\n[d](https://x.y) ![e](img/e.png#x)";
    expect(linkTargets(md)).toEqual(["docs/a.md", "https://x.y", "img/e.png#x"]);
    expect(localFile("docs/x.md", "../README.md#top")).toBe("README.md");
    expect(localFile("docs/x.md", "https://x.y")).toBeUndefined();
  });
});
