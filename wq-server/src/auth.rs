//! Who may call: bearer tokens, each for everything or for one tenant.
//!
//! Tokens are kept as SHA-256 digests and a presented token is compared
//! with every one of them in constant time, so neither a token's bytes nor
//! its length nor which token matched shows in the time of an answer.
//! Tokens are never logged: [`Auth`]'s `Debug` shows only how many there are.

use std::fmt;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// What a caller may see and touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything: every queue, tenant and operation.
    Admin,
    /// The jobs of this tenant only; queue-wide views and actions (counts,
    /// pausing, sessions) are refused.
    Tenant(Arc<str>),
}

impl Scope {
    /// The tenant a caller is confined to, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Admin => None,
            Scope::Tenant(t) => Some(t),
        }
    }

    /// Refuses a tenant's caller an action on a whole queue.
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Scope::Admin => Ok(()),
            Scope::Tenant(_) => Err(ApiError::forbidden(
                "a tenant's token acts on its own jobs, not on whole queues",
            )),
        }
    }
}

/// A token's digest and what it may do.
type Known = ([u8; 32], Scope);

/// The tokens a server accepts.
#[derive(Clone)]
pub struct Auth {
    /// `None`: no check at all (started explicitly without auth).
    tokens: Option<Arc<Vec<Known>>>,
}

impl Auth {
    /// No token yet: every request is refused until one is added.
    pub fn tokens() -> Self {
        Self {
            tokens: Some(Arc::new(Vec::new())),
        }
    }

    /// No check: every caller is an admin. The server says so loudly when
    /// it starts; use it only on a trusted network or in a demo.
    pub fn disabled() -> Self {
        Self { tokens: None }
    }

    /// How many tokens are accepted (none when disabled).
    pub fn len(&self) -> usize {
        self.tokens.as_ref().map_or(0, |t| t.len())
    }

    /// Whether no token is accepted: every checked request is refused.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether requests are checked.
    pub fn is_enabled(&self) -> bool {
        self.tokens.is_some()
    }

    /// Accepts `token` for everything. An empty token is never accepted
    /// (no request can present one).
    pub fn admin(self, token: &str) -> Self {
        self.with(token, Scope::Admin)
    }

    /// Accepts `token` for `tenant`'s jobs only.
    pub fn tenant(self, tenant: &str, token: &str) -> Self {
        self.with(token, Scope::Tenant(tenant.into()))
    }

    fn with(mut self, token: &str, scope: Scope) -> Self {
        if token.is_empty() {
            return self;
        }
        if let Some(tokens) = &mut self.tokens {
            Arc::make_mut(tokens).push((digest(token.as_bytes()), scope));
        }
        self
    }

    /// The scope of a presented token, if it is one of ours. Every token is
    /// compared, whichever matches.
    pub fn check(&self, presented: Option<&str>) -> Option<Scope> {
        let Some(tokens) = &self.tokens else {
            return Some(Scope::Admin);
        };
        let presented = digest(presented?.as_bytes());
        let mut found = None;
        for (known, scope) in tokens.iter() {
            if bool::from(known.ct_eq(&presented)) {
                found = Some(scope.clone());
            }
        }
        found
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tokens {
            None => f.write_str("Auth(disabled)"),
            Some(t) => write!(f, "Auth({} tokens)", t.len()),
        }
    }
}

/// The token of an `Authorization` value: the scheme `Bearer` matched in
/// any case, as HTTP's scheme names are.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The caller of a request, from its `Authorization: Bearer` header.
#[derive(Clone, Debug)]
pub struct Caller(pub Scope);

impl<B: wq::Backend> FromRequestParts<AppState<B>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<B>,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        state
            .auth
            .check(presented)
            .map(Caller)
            .ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_their_scopes() {
        let auth = Auth::tokens().admin("root").tenant("acme", "acme-token");
        assert_eq!(auth.check(Some("root")), Some(Scope::Admin));
        assert_eq!(
            auth.check(Some("acme-token")),
            Some(Scope::Tenant("acme".into()))
        );
        assert_eq!(auth.check(Some("roo")), None);
        assert_eq!(auth.check(None), None);
        assert_eq!(Auth::tokens().check(Some("")), None);
        assert_eq!(Auth::disabled().check(None), Some(Scope::Admin));
        assert!(
            Auth::tokens().admin("").is_empty(),
            "an empty token is no token"
        );
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }

    #[test]
    fn debug_shows_no_token() {
        let shown = format!("{:?}", Auth::tokens().admin("secret-token"));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
