/**
 * The documentation's map holds: every guide in docs/ is linked from the README, and every
 * relative link in README.md and docs/*.md points to a file that exists (anchors and external
 * links are not checked here; the API reference's links are checked by `npm run docs:check`).
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { linkTargets, localFile } from "../support/markdown-links.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const guides = readdirSync(join(root, "docs"))
  .filter((f) => f.endsWith(".md"))
  .sort();

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
