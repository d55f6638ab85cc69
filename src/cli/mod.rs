//! The `hookpipe` commands. Each submodule owns one subcommand: its `Args` (clap) and its `main`.

pub mod render;
