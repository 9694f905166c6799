-- gen-durable schema, version 15: failure and cancel routing, how an await ended, the engine clock.
--
-- failure: set when a step's last attempt failed and the machine routed the instance to its
-- onFailure step ({ error, step, attempts }, read as ctx.failure). It stays for the rest of the
-- instance's life: a second failure after routing ends the instance failed, so routing happens once.
alter table {{schema}}.instances add column failure jsonb;
-- cancel_requested: engine.cancel of an instance whose machine has an onCancel step makes it
-- runnable at that step with the cancel's reason here ({ name, message }, read as ctx.cancellation);
-- whatever that step returns, or once it has failed its last attempt, the instance ends cancelled.
alter table {{schema}}.instances add column cancel_requested jsonb;
-- resumed_by: 'signal' or 'timeout' once an await resumed (ctx.resumedBy); cleared with awaited
-- when the instance moves to another step.
alter table {{schema}}.instances add column resumed_by text;

-- The engine clock: database time plus skew_ms. Zero in production; advanceTime (gen-durable/testing)
-- adds to it what it moves the stored times back by, so ctx.now() moves with the timers it fires and
-- a deadline given as a date (ctx.await's until) lands where the step meant it.
create table {{schema}}.engine_clock (
  one     boolean primary key default true check (one),
  skew_ms double precision not null default 0
);
insert into {{schema}}.engine_clock (one, skew_ms) values (true, 0);
