//! Sign-in sessions. The browser holds only a random session id in an HttpOnly cookie; the
//! person's token stays on the server, inside the client that acts as them. Each session has
//! its own CSRF token, which every form and script that writes must send back.
//!
//! The store is bounded: a flood of sign-ins cannot grow it past `max`, and sessions end after
//! `idle` without use or `lifetime` in all (the token may be revoked before that; the API
//! server then refuses it, and the person signs in again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use kube::Client;
use sha2::{Digest, Sha256};

use crate::cluster::Person;
use crate::cookie::Cookie;
use crate::oidc::Renewal;

/// One signed-in person.
#[derive(Clone)]
pub struct Session {
    /// Who.
    pub person: Person,
    /// A client acting as them.
    pub client: Client,
    /// The token forms and scripts send back on every write.
    pub csrf: String,
    /// How its token is renewed, when the person signed in at the OpenID provider.
    pub renewal: Option<Renewal>,
    created: Instant,
    last_seen: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("person", &self.person)
            .finish_non_exhaustive()
    }
}

/// How long sessions live and how many there may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most sessions at once.
    pub max: usize,
    /// A session unused this long is over.
    pub idle: Duration,
    /// A session this old is over, used or not.
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max: 10_000,
            idle: Duration::from_secs(2 * 3600),
            lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

/// Why a session could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    /// The store is full.
    #[error("too many people are signed in; try again later")]
    Full,
}

/// The sessions, by the SHA-256 of their id (a lookup never compares secrets byte by byte).
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<[u8; 32], Session>>>,
    limits: Limits,
    /// `__Host-vexa-session`, `Strict`, for the session's whole lifetime.
    cookie: Cookie,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS's generator failing is not something a console can work around.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system's random numbers");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Sessions {
    /// An empty store. `secure`: cookies are `Secure` (served over HTTPS or on loopback).
    pub fn new(limits: Limits, secure: bool) -> Self {
        Self {
            inner: Arc::default(),
            limits,
            cookie: Cookie::new(
                "__Host-vexa-session",
                "vexa-session",
                "Strict",
                limits.lifetime,
                secure,
            ),
        }
    }

    /// The cookie's name.
    pub fn cookie_name(&self) -> &'static str {
        self.cookie.name()
    }

    /// A new session for `person`; returns its id (the cookie's value).
    pub fn start(&self, person: Person, client: Client) -> Result<String, SessionError> {
        self.start_renewable(person, client, None)
    }

    /// A new session whose token `renewal` renews.
    pub fn start_renewable(
        &self,
        person: Person,
        client: Client,
        renewal: Option<Renewal>,
    ) -> Result<String, SessionError> {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= self.limits.max {
            map.retain(|_, s| self.live(s, now));
            if map.len() >= self.limits.max {
                return Err(SessionError::Full);
            }
        }
        let id = random_token();
        map.insert(
            key(&id),
            Session {
                person,
                client,
                csrf: random_token(),
                renewal,
                created: now,
                last_seen: now,
            },
        );
        Ok(id)
    }

    /// The live session with this id, marked as used.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.lock();
        let k = key(id);
        let live = map.get(&k).map(|s| self.live(s, now))?;
        if !live {
            map.remove(&k);
            return None;
        }
        let s = map.get_mut(&k)?;
        s.last_seen = now;
        Some(s.clone())
    }

    /// Gives session `id` a renewed token (its client) and what renews it next.
    pub fn renew(&self, id: &str, client: Client, renewal: Renewal) {
        if let Some(s) = self.lock().get_mut(&key(id)) {
            s.client = client;
            s.renewal = Some(renewal);
        }
    }

    /// Ends a session; returns it.
    pub fn end(&self, id: &str) -> Option<Session> {
        self.lock().remove(&key(id))
    }

    /// How many sessions there are (live or not yet swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the sessions that are over.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, s| self.live(s, now));
    }

    /// The `Set-Cookie` value that gives the browser this session.
    pub fn set_cookie(&self, id: &str) -> String {
        self.cookie.set(id)
    }

    /// The `Set-Cookie` value that removes it.
    pub fn clear_cookie(&self) -> String {
        self.cookie.clear()
    }

    /// The session id in a `Cookie` header, if any.
    pub fn id_in<'a>(&self, cookie_header: &'a str) -> Option<&'a str> {
        self.cookie.find(cookie_header)
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) < self.limits.idle
            && now.duration_since(s.created) < self.limits.lifetime
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        let (svc, _) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        Client::new(svc, "default")
    }

    fn alice() -> Person {
        Person {
            name: "alice".into(),
            groups: vec![],
        }
    }

    #[tokio::test]
    async fn a_session_is_found_by_its_id_only() {
        let s = Sessions::new(Limits::default(), true);
        let id = s.start(alice(), client()).unwrap();
        assert_eq!(s.get(&id).unwrap().person.name, "alice");
        assert!(s.get("forged").is_none());
        assert!(s.get(&id[1..]).is_none());
        s.end(&id);
        assert!(s.get(&id).is_none());
    }

    #[tokio::test]
    async fn the_store_is_bounded() {
        let s = Sessions::new(
            Limits {
                max: 2,
                ..Limits::default()
            },
            true,
        );
        s.start(alice(), client()).unwrap();
        s.start(alice(), client()).unwrap();
        assert_eq!(s.start(alice(), client()), Err(SessionError::Full));
        assert_eq!(s.len(), 2);
    }

    #[tokio::test]
    async fn idle_sessions_end() {
        let s = Sessions::new(
            Limits {
                idle: Duration::ZERO,
                ..Limits::default()
            },
            true,
        );
        let id = s.start(alice(), client()).unwrap();
        assert!(s.get(&id).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure() {
        let s = Sessions::new(Limits::default(), true);
        let c = s.set_cookie("abc");
        assert!(c.starts_with("__Host-vexa-session=abc; Path=/; HttpOnly; SameSite=Strict"));
        assert!(c.ends_with("; Secure"));
        assert_eq!(s.id_in("x=1; __Host-vexa-session=abc; y=2"), Some("abc"));
        assert_eq!(s.id_in("vexa-session=abc"), None);
        assert_eq!(s.id_in("__Host-vexa-session="), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
