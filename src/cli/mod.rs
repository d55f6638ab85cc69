//! The `hookpipe` commands. Each submodule owns one subcommand: its `Args` (clap) and its `main`.

pub mod check;
pub mod render;
pub mod replay;
pub mod run;
