//! End to end, everything real: the local Camunda engine on PostgreSQL with the hook plugin
//! (`deploy/scripts/camunda.sh start`), FerretDB (`deploy/scripts/ferretdb.sh start`), and per
//! test a three-node bus, a collector and taskpool-core as processes; Prometheus and Chromium
//! from Debian's packages. `scripts/test` starts and installs all of it.

mod applications;
mod burst;
mod compose;
mod convergence;
mod faults;
mod flow;
mod follow;
mod fuzz;
mod observe;
mod outages;
mod trace;
