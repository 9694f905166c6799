/** "Did you mean" for misspelt option keys and step names. */
export function closest(input: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = distance(input.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = candidate;
    }
  }
  // Only suggest when the spelling is plausibly a slip, not an unrelated word.
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

export function didYouMean(input: string, candidates: Iterable<string>): string {
  const guess = closest(input, candidates);
  return guess ? ` (did you mean "${guess}"?)` : "";
}

function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost);
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** Throws `make(...)` for the first key of `object` that is not in `allowed`. */
export function rejectUnknownKeys(
  object: object,
  allowed: readonly string[],
  where: string,
  make: (m: string) => Error,
): void {
  for (const key of Object.keys(object)) {
    if (!allowed.includes(key)) {
      throw make(
        `${where}: unknown option "${key}"${didYouMean(key, allowed)}; valid options are ${allowed.join(", ")}`,
      );
    }
  }
}
