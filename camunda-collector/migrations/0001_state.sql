-- The collector's durable state. Every row belongs to one application (one engine), so
-- collectors of several engines may share a database.

-- The last state emitted per task, to emit precise diffs. `version`/`position` name the last
-- event of the task's stream; `changed_at` is the engine's timestamp of that state, so an
-- older observation arriving late is ignored. Finished tasks stay a while to ignore stragglers.
CREATE TABLE task_state (
    application text NOT NULL,
    task_id     text NOT NULL,
    version     bigint NOT NULL,
    position    bigint NOT NULL,
    changed_at  text NOT NULL,
    finished    boolean NOT NULL,
    state       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (application, task_id)
);
CREATE INDEX task_state_open ON task_state (application) WHERE NOT finished;

-- How far each incremental query has read, in the engine's clock.
CREATE TABLE watermark (
    application text NOT NULL,
    name        text NOT NULL,
    value       text NOT NULL,
    PRIMARY KEY (application, name)
);

-- Commands claimed and their answers: a command id runs at most once (answer NULL = running).
CREATE TABLE command_run (
    application text NOT NULL,
    id          uuid NOT NULL,
    answer      jsonb,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (application, id)
);

-- Process definitions already announced on the bus.
CREATE TABLE process_definition_seen (
    application text NOT NULL,
    id          text NOT NULL,
    PRIMARY KEY (application, id)
);
