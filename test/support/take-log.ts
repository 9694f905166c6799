/**
 * A test-only log of every draw from the rate-limit buckets of a schema: a
 * trigger records, per update of a bucket, how many tokens it lost and the
 * database time the draw was made at (the bucket's refill time). Windows over
 * this log measure what the limiter let through exactly, whatever the delay
 * between a draw and the step's own first write.
 */
export interface BucketSpec {
  /** Tokens per second. */
  rate: number;
  capacity: number;
}

export function takeLogSql(schema: string, buckets: Record<string, BucketSpec>): string {
  const s = `"${schema}"`;
  const cases = (field: keyof BucketSpec) =>
    `case new.name ${Object.entries(buckets)
      .map(([name, spec]) => `when '${name}' then ${spec[field]}`)
      .join(" ")} end`;
  return `
    create table ${s}.takes (name text, partition text, at timestamptz, taken double precision);
    create function ${s}.log_take() returns trigger language plpgsql as $$
    begin
      insert into ${s}.takes values (new.name, new.partition, new.updated_at,
        least(${cases("capacity")}, old.tokens + extract(epoch from new.updated_at - old.updated_at) * ${cases("rate")}) - new.tokens);
      return null;
    end $$;
    create trigger log_take after update on ${s}.rate_limit_buckets for each row execute function ${s}.log_take();`;
}

/** Per (name, partition): the most tokens drawn in any one-second window that starts at a draw. */
export function busiestSecondSql(schema: string): string {
  const s = `"${schema}"`;
  return `
    with t as (select name, partition, at, taken from ${s}.takes where taken > 0.5)
    select t1.name, t1.partition, max(w.n)::float8 as busiest
    from t t1 cross join lateral (
      select sum(t2.taken) as n from t t2
      where t2.name = t1.name and t2.partition = t1.partition and t2.at >= t1.at and t2.at < t1.at + interval '1 second'
    ) w
    group by t1.name, t1.partition order by 1, 2`;
}
