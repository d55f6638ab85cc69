//! hookpipe's integration tests: one binary, one module per area, shared helpers in `support`.
mod conformance;
mod differential;
