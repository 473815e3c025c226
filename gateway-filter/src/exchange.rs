//! Tokens for tools: the dispatch token is traded at Keycloak for a Keycloak token (RFC 7523 JWT
//! grant), which is exchanged per tool for one scoped to the tool's audience (RFC 8693). Both
//! are cached until shortly before they expire, so a call on a warm cache costs no round trip.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::decide::sha256_hex;

/// A token Keycloak issued and how long it lives.
#[derive(Clone)]
pub struct Issued {
    /// The access token.
    pub token: String,
    /// Its lifetime from now.
    pub expires_in: Duration,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// The two Keycloak calls (a fake in tests, `vexa_keycloak::TokenClient` in the binary).
pub trait Exchanger: Send + Sync + 'static {
    /// RFC 7523: the dispatch token as the assertion, for a Keycloak token of its subject.
    fn jwt_grant(&self, assertion: &str) -> impl Future<Output = Result<Issued, String>> + Send;
    /// RFC 8693: a Keycloak token for one scoped to `audience`.
    fn exchange(
        &self,
        subject_token: &str,
        audience: &str,
        scope: Option<&str>,
    ) -> impl Future<Output = Result<Issued, String>> + Send;
}

impl Exchanger for vexa_keycloak::TokenClient {
    async fn jwt_grant(&self, assertion: &str) -> Result<Issued, String> {
        let t = vexa_keycloak::TokenClient::jwt_grant(self, assertion)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Issued {
            token: t.access_token,
            expires_in: t.expires_in,
        })
    }

    async fn exchange(
        &self,
        subject_token: &str,
        audience: &str,
        scope: Option<&str>,
    ) -> Result<Issued, String> {
        let t = vexa_keycloak::TokenClient::exchange(self, subject_token, audience, scope)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Issued {
            token: t.access_token,
            expires_in: t.expires_in,
        })
    }
}

/// Whether a token came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// Both tokens were cached.
    Hit,
    /// At least one Keycloak call was made.
    Miss,
}

/// Cached tokens, keyed by digests (never the tokens themselves), bounded in size.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

/// At most this many tokens are cached; beyond it, expired ones go first, then everything.
const MAX_ENTRIES: usize = 10_000;

impl TokenCache {
    fn get(&self, key: &str, now: Instant) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(_, until)| now < *until)
            .map(|(t, _)| t.clone())
    }

    fn put(&self, key: String, issued: &Issued, now: Instant, not_after: Instant) {
        // Renewed a little before it expires: a fifth of its life, at most 30 s.
        let margin = (issued.expires_in / 5).min(Duration::from_secs(30));
        let until = (now + issued.expires_in - margin).min(not_after);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, u)| now < *u);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (issued.token.clone(), until));
    }

    /// The token for `audience` (and `scope`) on behalf of `dispatch_token`, which is valid
    /// until `not_after`: from the cache, or by the JWT grant (cached per dispatch token) and
    /// the exchange (cached per dispatch token and tool).
    pub async fn token_for<E: Exchanger>(
        &self,
        exchanger: &E,
        dispatch_token: &str,
        audience: &str,
        scope: &str,
        not_after: Instant,
    ) -> Result<(String, Cache), String> {
        let now = Instant::now();
        let token_key = sha256_hex(dispatch_token.as_bytes());
        let tool_key = format!("x/{token_key}/{audience}/{scope}");
        if let Some(t) = self.get(&tool_key, now) {
            return Ok((t, Cache::Hit));
        }
        let grant_key = format!("g/{token_key}");
        let keycloak = match self.get(&grant_key, now) {
            Some(t) => t,
            None => {
                let issued = exchanger
                    .jwt_grant(dispatch_token)
                    .await
                    .map_err(|e| format!("JWT grant: {e}"))?;
                self.put(grant_key, &issued, now, not_after);
                issued.token
            }
        };
        let scope = (!scope.is_empty()).then_some(scope);
        let issued = exchanger
            .exchange(&keycloak, audience, scope)
            .await
            .map_err(|e| format!("token exchange for audience {audience:?}: {e}"))?;
        self.put(tool_key, &issued, now, not_after);
        Ok((issued.token, Cache::Miss))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Fake {
        grants: AtomicUsize,
        exchanges: AtomicUsize,
    }

    impl Exchanger for Fake {
        async fn jwt_grant(&self, assertion: &str) -> Result<Issued, String> {
            self.grants.fetch_add(1, Ordering::SeqCst);
            Ok(Issued {
                token: format!("kc({})", assertion.len()),
                expires_in: Duration::from_secs(300),
            })
        }
        async fn exchange(
            &self,
            subject: &str,
            audience: &str,
            _scope: Option<&str>,
        ) -> Result<Issued, String> {
            self.exchanges.fetch_add(1, Ordering::SeqCst);
            Ok(Issued {
                token: format!("{audience}<-{subject}"),
                expires_in: Duration::from_secs(60),
            })
        }
    }

    #[tokio::test]
    async fn one_grant_per_dispatch_token_and_one_exchange_per_tool() {
        let cache = TokenCache::default();
        let fake = Fake::default();
        let later = Instant::now() + Duration::from_secs(600);
        let (t, c) = cache
            .token_for(&fake, "dispatch-1", "notes", "notes:write", later)
            .await
            .unwrap();
        assert_eq!((t.as_str(), c), ("notes<-kc(10)", Cache::Miss));
        let (_, c) = cache
            .token_for(&fake, "dispatch-1", "notes", "notes:write", later)
            .await
            .unwrap();
        assert_eq!(c, Cache::Hit);
        cache
            .token_for(&fake, "dispatch-1", "mail", "", later)
            .await
            .unwrap();
        cache
            .token_for(&fake, "dispatch-2", "notes", "notes:write", later)
            .await
            .unwrap();
        assert_eq!(fake.grants.load(Ordering::SeqCst), 2);
        assert_eq!(fake.exchanges.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn nothing_outlives_the_dispatch_token() {
        let cache = TokenCache::default();
        let fake = Fake::default();
        let expired = Instant::now();
        for _ in 0..2 {
            cache
                .token_for(&fake, "dispatch-1", "notes", "", expired)
                .await
                .unwrap();
        }
        assert_eq!(fake.exchanges.load(Ordering::SeqCst), 2);
        assert_eq!(fake.grants.load(Ordering::SeqCst), 2);
    }
}
