/**
 * Output helpers for the operator commands: aligned tables, short durations and
 * timestamps. Human output only; `--json` output is plain JSON.stringify.
 */

export interface Column {
  header: string;
  /** Numbers read best right-aligned. */
  align?: "left" | "right";
}

/**
 * Lines of an aligned table: a header, then one line per row, columns two
 * spaces apart. Cell text is made single-line (a newline or tab in a step name
 * or key would break the alignment) and trailing spaces are dropped.
 */
export function table(columns: readonly Column[], rows: ReadonlyArray<readonly string[]>): string[] {
  const clean = rows.map((row) => columns.map((_, i) => oneLine(row[i] ?? "")));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...clean.map((row) => row[i]!.length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (columns[i]!.align === "right" ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...clean.map(line)];
}

/** Label/value lines with the values aligned, for one record (`show`). */
export function fields(entries: ReadonlyArray<readonly [string, string]>): string[] {
  const width = Math.max(0, ...entries.map(([label]) => label.length)) + 1;
  return entries.map(([label, value]) => `${`${label}:`.padEnd(width)} ${value}`.trimEnd());
}

function oneLine(text: string): string {
  return text.replace(/[\r\n\t]+/g, " ");
}

/** Cuts long text (a state, an error message) to `max` characters with an ellipsis. */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/**
 * A duration for people: "850ms", "12s", "3m 20s", "2h 5m", "3d 4h". Two units
 * at most: an operator wants the order of magnitude, not the exact figure.
 */
export function duration(ms: number): string {
  if (!Number.isFinite(ms)) return "-";
  const sign = ms < 0 ? "-" : "";
  const abs = Math.abs(Math.round(ms));
  if (abs < 1000) return `${sign}${abs}ms`;
  const s = Math.floor(abs / 1000);
  const units: Array<[string, number]> = [
    ["d", Math.floor(s / 86_400)],
    ["h", Math.floor(s / 3600) % 24],
    ["m", Math.floor(s / 60) % 60],
    ["s", s % 60],
  ];
  const first = units.findIndex(([, n]) => n > 0);
  return (
    sign +
    units
      .slice(first, first + 2)
      .filter(([, n]) => n > 0)
      .map(([unit, n]) => `${n}${unit}`)
      .join(" ")
  );
}

/** UTC, to the second: "2025-01-31 12:00:05Z". */
export function timestamp(date: Date | number | null | undefined): string {
  if (date === null || date === undefined) return "-";
  // pg returns the number ±Infinity for the timestamps 'infinity' and '-infinity' (an await without timeout).
  if (!(date instanceof Date)) return date === Infinity ? "never" : "-";
  return date
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d{3}Z$/, "Z");
}

/** A time relative to `now` (the database's clock): "3m 20s ago", "in 5s". */
export function relative(date: Date | number | null | undefined, now: Date): string {
  if (date === null || date === undefined) return "-";
  if (!(date instanceof Date)) return date === Infinity ? "never" : "-";
  const ms = date.getTime() - now.getTime();
  return ms > 0 ? `in ${duration(ms)}` : `${duration(-ms)} ago`;
}
