//! Camunda collector: detects user-task changes of a Camunda 7 engine and appends them to the bus. Not built yet (see the open issue for the collector).
