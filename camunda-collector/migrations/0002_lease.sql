-- Which collector of an application is active: a lease its holder renews. `token` grows by one
-- at every takeover (the fencing token); `expires_at` is in the database's clock, so
-- collectors' clocks do not matter. `holder_pid` and `holder_started` name the holder's
-- session: a holder whose session is gone (its process died) is replaced at once, one that
-- stops renewing (paused, or its host cut off) once the lease expires.
CREATE TABLE lease (
    application    text PRIMARY KEY,
    holder         text NOT NULL,
    token          bigint NOT NULL,
    expires_at     timestamptz NOT NULL,
    holder_pid     integer NOT NULL,
    holder_started timestamptz NOT NULL
);
