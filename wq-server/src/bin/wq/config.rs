//! The configuration file (`--config`, or `WQ_CONFIG`): TOML with the
//! same names as the options. A flag or an environment variable wins over
//! the file, the file over the defaults.
//!
//! ```toml
//! backend = "postgres"
//! url = "postgres://wq@db.internal/wq"
//! namespace = "wq"
//!
//! [serve]
//! listen = "0.0.0.0:8080"
//! token = "..."
//! tenant_tokens = ["acme=..."]
//! degraded_backlog = 10000
//! unhealthy_backlog = 100000
//! ```

use std::net::SocketAddr;
use std::path::Path;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use crate::{BackendKind, Failure, StoreArgs, serve::ServeArgs};

/// What a configuration file may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    backend: Option<String>,
    url: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    serve: ServeFile,
}

/// The `[serve]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeFile {
    listen: Option<SocketAddr>,
    token: Option<String>,
    tenant_tokens: Option<Vec<String>>,
    degraded_backlog: Option<u64>,
    unhealthy_backlog: Option<u64>,
}

impl File {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, Failure> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("the configuration file {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| format!("the configuration file {}: {e}", path.display()).into())
    }

    /// Fills what neither a flag nor the environment gave.
    pub fn apply_store(&self, args: &mut StoreArgs, m: &ArgMatches) -> Result<(), Failure> {
        if unset(m, "backend")
            && let Some(b) = &self.backend
        {
            args.backend = <BackendKind as clap::ValueEnum>::from_str(b, true).map_err(|_| {
                format!("the configuration file: backend `{b}` is not memory, postgres or redis")
            })?;
        }
        if unset(m, "url") && self.url.is_some() {
            args.url.clone_from(&self.url);
        }
        if unset(m, "namespace")
            && let Some(n) = &self.namespace
        {
            args.namespace.clone_from(n);
        }
        Ok(())
    }

    /// Fills `wq serve`'s options that neither a flag nor the environment gave.
    pub fn apply_serve(&self, args: &mut ServeArgs, m: &ArgMatches) {
        let f = &self.serve;
        if unset(m, "listen")
            && let Some(v) = f.listen
        {
            args.listen = v;
        }
        if unset(m, "token") && f.token.is_some() {
            args.token.clone_from(&f.token);
        }
        if unset(m, "tenant_tokens")
            && let Some(v) = &f.tenant_tokens
        {
            args.tenant_tokens.clone_from(v);
        }
        if unset(m, "degraded_backlog")
            && let Some(v) = f.degraded_backlog
        {
            args.degraded_backlog = v;
        }
        if unset(m, "unhealthy_backlog")
            && let Some(v) = f.unhealthy_backlog
        {
            args.unhealthy_backlog = v;
        }
    }
}

/// Whether an option was left to its default (neither a flag nor the
/// environment set it).
fn unset(m: &ArgMatches, id: &str) -> bool {
    !matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_refused() {
        assert!(toml::from_str::<File>("colour = 1").is_err());
        let f: File =
            toml::from_str("backend = \"redis\"\n[serve]\nlisten = \"127.0.0.1:9\"").unwrap();
        assert_eq!(f.backend.as_deref(), Some("redis"));
        assert_eq!(f.serve.listen, Some("127.0.0.1:9".parse().unwrap()));
    }
}
