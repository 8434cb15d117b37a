-- The databases besides camunda (POSTGRES_DB, the local engine's): the billing engine's, and
-- each collector's own state (watermarks, command ids). Run once, on a new volume.
CREATE DATABASE camunda_billing;
CREATE DATABASE collector;
CREATE DATABASE collector_billing;
