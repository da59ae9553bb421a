//! The `engagement` binary's library: configuration, wiring, HTTP and the command line.
//!
//! May depend on everything: `projections`, `domain`, axum, clap. Holds no business rule.
//!
//! # Layout
//! - [`config`]: flags and environment, read once.
//! - [`app`]: builds the application and runs it until a shutdown signal.
//! - [`graphql`]: the GraphQL API (schema, resolvers, auth, errors).
//! - [`http`]: routes (`/graphql`, `/graphql/ws`, the playground, the dashboard at `/`,
//!   `/api/health`, `/healthz`, `/readyz`, `/metrics`, `/unsubscribe`, the webhooks) and the
//!   state they share.
//! - [`health`]: the health report both HTTP and GraphQL show.
//! - [`cli`]: the subcommands (`serve`, `migrate`, `rebuild`, `rescore`, `backtest`).
//! - [`backtest`]: reading purchase histories for `engagement backtest`.
//! - [`demo`]: `serve --demo`, a database of its own filled with invented clients.
//! - [`import`]: `engagement import clients|orders FILE`, with progress and a summary.
//! - [`telemetry`]: logs (text or JSON) and OpenTelemetry traces.

pub mod app;
pub mod backtest;
pub mod cli;
pub mod config;
pub mod demo;
pub mod graphql;
pub mod health;
pub mod http;
pub mod import;
pub mod keys;
pub mod replicas;
pub mod telemetry;
