//! Helpers shared by the integration tests.

pub mod api_server;
