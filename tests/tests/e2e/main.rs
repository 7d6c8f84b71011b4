//! End-to-end tests: one binary, a module per area.

mod agent;
mod agent_trees;
mod aggregation;
mod auth;
mod cli;
mod concurrency;
mod config_files;
mod crash;
mod create;
mod delete;
mod demo;
mod errors;
mod etag;
mod events;
mod eventservice;
mod limits;
mod path_escape;
mod query;
mod receiver;
mod reference_tree;
mod schema;
mod service_root;
mod shutdown;
mod sse;
mod tasks;
mod update;
