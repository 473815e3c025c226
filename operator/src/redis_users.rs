//! Redis per dispatch, the operator's side: as Redis's admin user it creates each dispatch's
//! ACL user before the dispatch's Secret and Job exist, removes it when the run ends (giving the
//! streams their retention), and sweeps away the users of dispatches that are gone (an operator
//! that crashed between the two). What a user may do is `vexa_stream::acl`.
//!
//! A user's password is derived (HMAC-SHA256) from a key only the operator holds and the
//! dispatch's namespace, name and UID, so a retried start writes the same password into the
//! same Secret and never locks out a pod that already read it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use redis::aio::ConnectionManager;
use redis::{Client, RedisError};
use sha2::Sha256;
use tokio::sync::Mutex;
use vexa_core::{dispatch_id, in_topic, out_topic};
use vexa_stream::acl::{self, DispatchUser, USER_PREFIX};

/// A dispatch, as its user's name records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DispatchKey {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID (a Dispatch made again under the same name is another run).
    pub uid: String,
}

impl DispatchKey {
    /// The ACL user's name: `vexa-dispatch:<namespace>/<name>/<uid>`.
    pub fn username(&self) -> String {
        format!("{USER_PREFIX}{}/{}/{}", self.namespace, self.name, self.uid)
    }

    /// Reads a user's name back; `None` for a name the operator did not make.
    pub fn parse(username: &str) -> Option<Self> {
        let rest = username.strip_prefix(USER_PREFIX)?;
        let mut parts = rest.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(namespace), Some(name), Some(uid), None)
                if !namespace.is_empty() && !name.is_empty() && !uid.is_empty() =>
            {
                Some(Self {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    uid: uid.to_owned(),
                })
            }
            _ => None,
        }
    }

    /// The dispatch's two streams, the only keys its user may touch.
    pub fn keys(&self) -> Vec<String> {
        let id = dispatch_id(&self.namespace, &self.name);
        vec![out_topic(&id), in_topic(&id)]
    }
}

/// The dispatch's user, with its password derived from `key`.
pub fn user(key: &[u8], dispatch: &DispatchKey) -> DispatchUser {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for part in [
        b"vexa redis dispatch user".as_slice(),
        dispatch.namespace.as_bytes(),
        dispatch.name.as_bytes(),
        dispatch.uid.as_bytes(),
    ] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    let password = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    DispatchUser {
        username: dispatch.username(),
        password,
        keys: dispatch.keys(),
    }
}

/// The operator's admin link to Redis for the dispatches' users.
pub struct RedisUsers {
    client: Client,
    conn: Mutex<Option<ConnectionManager>>,
    key: Vec<u8>,
    retention: Option<Duration>,
}

impl std::fmt::Debug for RedisUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUsers")
            .field(
                "addr",
                &self.client.get_connection_info().addr().to_string(),
            )
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// Why a dispatch's Redis user could not be set up or removed; retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error(
    "Redis at {addr} refused or failed {doing} {username}: {source} (check that Redis runs and that the operator's admin user may run ACL and FUNCTION)"
)]
pub struct UserError {
    addr: String,
    doing: &'static str,
    username: String,
    source: RedisError,
}

impl RedisUsers {
    /// Users on the Redis of `client` (an admin connection), passwords derived from `key`,
    /// streams kept for `retention` after their dispatch ends (`None`: no expiry).
    pub fn new(client: Client, key: Vec<u8>, retention: Option<Duration>) -> Self {
        Self {
            client,
            conn: Mutex::new(None),
            key,
            retention,
        }
    }

    /// The dispatch's user (name, password, keys); nothing is written.
    pub fn user(&self, dispatch: &DispatchKey) -> DispatchUser {
        user(&self.key, dispatch)
    }

    async fn conn(&self) -> Result<ConnectionManager, RedisError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let c = ConnectionManager::new(self.client.clone()).await?;
        *conn = Some(c.clone());
        Ok(c)
    }

    fn error(&self, doing: &'static str, username: &str, source: RedisError) -> UserError {
        UserError {
            addr: self.client.get_connection_info().addr().to_string(),
            doing,
            username: username.to_owned(),
            source,
        }
    }

    /// Creates (or resets) the dispatch's user; returns it and how long Redis took.
    pub async fn create(
        &self,
        dispatch: &DispatchKey,
    ) -> Result<(DispatchUser, Duration), UserError> {
        let user = self.user(dispatch);
        let started = Instant::now();
        let mut conn = self
            .conn()
            .await
            .map_err(|e| self.error("connecting to create", &user.username, e))?;
        acl::set_user(&mut conn, &user)
            .await
            .map_err(|e| self.error("creating", &user.username, e))?;
        Ok((user, started.elapsed()))
    }

    /// Removes the dispatch's user (its connections close) and lets its streams expire after
    /// the retention.
    pub async fn remove(&self, dispatch: &DispatchKey) -> Result<(), UserError> {
        let username = dispatch.username();
        let mut conn = self
            .conn()
            .await
            .map_err(|e| self.error("connecting to remove", &username, e))?;
        acl::remove_user(&mut conn, &username, &dispatch.keys(), self.retention)
            .await
            .map_err(|e| self.error("removing", &username, e))
    }

    /// Removes the user of every dispatch not in `live()` (gone, or its run over), and makes
    /// again the missing users of live ones (Redis restarted: ACL users live in its memory, not
    /// in its data). Returns how many it (removed, restored). `live` is asked after the users
    /// are listed, so a user created meanwhile belongs to a dispatch it knows.
    pub async fn sweep(
        &self,
        live: impl FnOnce() -> HashSet<DispatchKey>,
    ) -> Result<(usize, usize), UserError> {
        let mut conn = self
            .conn()
            .await
            .map_err(|e| self.error("connecting to list", USER_PREFIX, e))?;
        let users = acl::users(&mut conn)
            .await
            .map_err(|e| self.error("listing", USER_PREFIX, e))?;
        let live = live();
        let existing: HashSet<DispatchKey> =
            users.iter().filter_map(|u| DispatchKey::parse(u)).collect();
        let mut removed = 0;
        for dispatch in existing.difference(&live) {
            self.remove(dispatch).await?;
            tracing::info!(user = %dispatch.username(), "removed the Redis user of a dispatch that is gone or over");
            removed += 1;
        }
        let mut restored = 0;
        for dispatch in live.difference(&existing) {
            self.create(dispatch).await?;
            restored += 1;
        }
        Ok((removed, restored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DispatchKey {
        DispatchKey {
            namespace: "team-a".into(),
            name: "chat-1".into(),
            uid: "0b5e-11".into(),
        }
    }

    #[test]
    fn a_user_name_reads_back_and_names_only_its_streams() {
        let k = key();
        assert_eq!(k.username(), "vexa-dispatch:team-a/chat-1/0b5e-11");
        assert_eq!(DispatchKey::parse(&k.username()), Some(k.clone()));
        assert_eq!(
            k.keys(),
            ["unit:team-a/chat-1:out", "unit:team-a/chat-1:in"]
        );
        for other in [
            "default",
            "vexa-admin",
            "vexa-dispatch:a/b",
            "vexa-dispatch:a/b/c/d",
        ] {
            assert_eq!(DispatchKey::parse(other), None, "{other}");
        }
    }

    #[test]
    fn the_password_is_stable_and_differs_by_key_and_dispatch() {
        let a = user(b"k1", &key());
        assert_eq!(a, user(b"k1", &key()));
        assert_eq!(a.password.len(), 64);
        assert_ne!(a.password, user(b"k2", &key()).password);
        let other = DispatchKey {
            uid: "0b5e-12".into(),
            ..key()
        };
        assert_ne!(a.password, user(b"k1", &other).password);
    }
}
