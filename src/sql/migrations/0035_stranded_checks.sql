-- gen-durable schema, version 35: a node's start checks for stranded instances only when its
-- definition of a machine is new to the check.
--
-- Before any loop claims, engine.start() looks for live instances parked at steps their machine's
-- definition lacks (a deploy that removed a step). That query reads every live instance of the
-- node's machines, whatever their number: with 200,000 jobs queued it took 168 ms of a node's
-- start (a parallel scan of the table, 28 ms with 20,000), on every start of every node.
--
-- A check's result only changes when a definition does, or when something stranded is still
-- there. So each check records, per machine, the steps it checked against and whether it found
-- an instance stranded; a start checks a machine again when its steps are not that set, or when
-- the last check found some. engine.check() and `gen-durable check` always read everything.
create table {{schema}}.stranded_checks (
  machine  text    primary key,
  -- The definition's steps the last check ran against (compared as a set).
  steps    text[]  not null,
  -- It found live instances of the machine parked at steps outside them (or could not tell).
  stranded boolean not null
);
