/**
 * bench/compare.sh's summary: reads the throughput lines it collected ("<pair> <build> | <label>:
 * <n> jobs/s; …") and prints, per run label, after ÷ before for each pair and their median. A
 * section that runs a label several times in one run (gd-rate-limit) counts their median.
 */
import { readFileSync } from "node:fs";
import { median } from "./util.js";

const runs = readFileSync(process.argv[2]!, "utf8")
  .trim()
  .split("\n")
  .flatMap((line) => {
    const match = /^(\d+) (\w+) \| (.*?): ([\d,]+) jobs\/s/.exec(line);
    return match
      ? [{ pair: match[1]!, build: match[2]!, label: match[3]!, rate: Number(match[4]!.replaceAll(",", "")) }]
      : [];
  });
console.log("\nafter ÷ before, by pair:");
for (const label of new Set(runs.map((r) => r.label))) {
  const ratios: number[] = [];
  for (const pair of new Set(runs.map((r) => r.pair))) {
    const rate = (build: string) => {
      const rates = runs.filter((r) => r.pair === pair && r.label === label && r.build === build).map((r) => r.rate);
      return rates.length > 0 ? median(rates) : undefined;
    };
    const before = rate("before");
    const after = rate("after");
    if (before && after) ratios.push(after / before);
  }
  if (ratios.length > 0) {
    console.log(`  ${label}: ${ratios.map((r) => r.toFixed(3)).join(" ")}; median ${median(ratios).toFixed(3)}`);
  }
}
