//! What every handler shares.

use std::sync::Arc;

use wq::{Backend, Client};

use crate::auth::Auth;
use crate::health::HealthPolicy;

/// The state of one router: the client it acts through, its tokens, and
/// what `/health` judges by.
pub struct AppState<B> {
    /// The client every call goes through.
    pub client: Client<B>,
    /// The tokens accepted.
    pub auth: Auth,
    /// When the backlog makes the service degraded or unhealthy.
    pub health: Arc<HealthPolicy>,
}

impl<B> Clone for AppState<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            auth: self.auth.clone(),
            health: self.health.clone(),
        }
    }
}

impl<B: Backend> AppState<B> {
    /// The client.
    pub fn client(&self) -> &Client<B> {
        &self.client
    }
}
