//! taskpool-core: projects bus events into MongoDB and serves the HTTP task API. Not built yet (see the open issue for taskpool-core).
