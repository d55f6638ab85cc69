//! hookpipe's integration tests: one binary, one module per area, shared helpers in `support`.

mod support;

mod batch;
mod cohort;
mod conformance;
mod deliver;
mod demo;
mod differential;
mod k8s;
mod kafka_smoke;
mod membership;
mod pipeline;
mod retry;
