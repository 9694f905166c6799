/** Machines and a running dashboard for the dashboard tests: one that can fail on demand, one that awaits, one that spawns. */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { z } from "zod";
import { createDashboard, defineMachine, type DashboardHandler, type DashboardOptions } from "../../src/index.js";

/** While true, Order's charge step throws for orders marked `poison` (flip it off and a retry completes). */
export const chargeSwitch = { broken: true };

export const Order = defineMachine({
  name: "Order",
  queue: "orders",
  state: z.object({ sku: z.string(), poison: z.boolean().optional(), note: z.string().optional() }),
  maxAttempts: 1,
  steps: {
    start: (ctx) => ctx.next("charge"),
    charge: (ctx) => {
      if (ctx.state.poison && chargeSwitch.broken) throw new Error(`card declined for ${ctx.state.sku}`);
      return ctx.next("ship");
    },
    ship: (ctx) => ctx.done({ shipped: ctx.state.sku }),
  },
});

export const Approval = defineMachine({
  name: "Approval",
  queue: "approvals",
  state: z.object({ note: z.string(), evil: z.string().optional() }),
  steps: {
    start: (ctx) => ctx.await("approve", "approved", undefined, { timeout: "1h", onTimeout: "expired" }),
    approved: (ctx) => ctx.done({ by: ctx.awaited[0]?.payload ?? null }),
    expired: (ctx) => ctx.done({ expired: true }),
  },
});

export const Batch = defineMachine({
  name: "Batch",
  queue: "orders",
  state: z.object({ skus: z.array(z.string()) }),
  steps: {
    start: (ctx) =>
      ctx.spawn(
        ctx.state.skus.map((sku) => ({ machine: Order, state: { sku } })),
        "report",
      ),
    report: (ctx) => ctx.done({ count: ctx.children.length }),
  },
});

export const MACHINES = [Order, Approval, Batch];

/** A dashboard on an ephemeral port; `stop` closes both. */
export async function serveDashboard(
  options: DashboardOptions,
): Promise<{ url: string; dashboard: DashboardHandler; server: Server; stop: () => Promise<void> }> {
  const dashboard = createDashboard(options);
  const server = createServer(dashboard);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    dashboard,
    server,
    stop: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await dashboard.close();
    },
  };
}
