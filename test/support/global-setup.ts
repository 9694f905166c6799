// One Postgres for the whole run: DATABASE_URL when set, else an embedded one.
import type { TestProject } from "vitest/node";
import { startDevDatabase } from "../../dev/postgres.js";

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string;
  }
}

export default async function setup(project: TestProject) {
  const db = await startDevDatabase();
  project.provide("databaseUrl", db.url);
  return () => db.stop();
}
