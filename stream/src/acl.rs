//! Redis per dispatch: the ACL user a dispatch's worker connects as, and the function library
//! it appends through.
//!
//! The operator holds an admin user. Before a dispatch's Secret and Job exist it creates, with
//! [`set_user`], an ACL user allowed only that dispatch's two streams (`unit:<id>:out` and
//! `unit:<id>:in`) and only the commands the worker uses ([`WORKER_COMMANDS`]): no other key,
//! no pub/sub channel, no `EVAL` (so the credential cannot run arbitrary Lua), no admin command.
//! The worker appends through the function [`APPEND_FUNCTION`] of the library [`LIBRARY`],
//! which the operator loads; Redis checks the commands a function runs against the caller's
//! ACL too, so the function reaches no key the user could not. When the dispatch ends,
//! [`remove_user`] deletes the user and gives both streams their retention.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Client, IntoConnectionInfo, RedisError};

/// The library holding the worker's append function.
pub const LIBRARY_NAME: &str = "vexa";
/// The function that appends `(id, event)` pairs exactly once (see `publish`).
pub const APPEND_FUNCTION: &str = "vexa_append";

/// The library's code (`FUNCTION LOAD`).
///
/// `vexa_append` takes the stream as its one key and `field, maxlen, id1, event1, id2, …`: it
/// appends each `(id, event)` in order with `XADD` (trimming the stream to about `maxlen`
/// entries, `0`: no trimming). When Redis refuses an id (not above the stream's top) it looks at
/// the entry with that id: its own event there means an earlier attempt landed, so it counts as
/// done and is not written again; anything else stops it at that event. Replies `{appended,
/// already_there, stopped}`; an error of Redis (the key is not a stream, …) is its error.
pub const LIBRARY: &str = r#"#!lua name=vexa
local function append(keys, args)
  local field, maxlen = args[1], args[2]
  local appended, present = 0, 0
  for i = 3, #args, 2 do
    local id, event = args[i], args[i + 1]
    local added
    if maxlen == '0' then
      added = redis.pcall('XADD', keys[1], id, field, event)
    else
      added = redis.pcall('XADD', keys[1], 'MAXLEN', '~', maxlen, id, field, event)
    end
    if type(added) == 'table' and added.err then
      if not string.find(added.err, 'equal or smaller', 1, true) then
        return added
      end
      local at = redis.call('XRANGE', keys[1], id, id)[1]
      if not (at and at[2][1] == field and at[2][2] == event) then
        return {appended, present, 1}
      end
      present = present + 1
    else
      appended = appended + 1
    end
  end
  return {appended, present, 0}
end
redis.register_function('vexa_append', append)
"#;

/// The commands a dispatch's worker may run, and nothing else: appending through the library
/// (and the `XADD`/`XRANGE` it runs), reading the top of `out`, creating the workers' group on
/// `in` and reading turns through it, and `PING`. `AUTH` needs no permission.
pub const WORKER_COMMANDS: &[&str] = &[
    "fcall",
    "xadd",
    "xrange",
    "xinfo|stream",
    "xgroup|create",
    "xreadgroup",
    "ping",
];

/// The prefix of every dispatch's ACL user name; [`users`] lists only these.
pub const USER_PREFIX: &str = "vexa-dispatch:";

/// A dispatch's ACL user.
#[derive(Clone, PartialEq, Eq)]
pub struct DispatchUser {
    /// The user name (starts with [`USER_PREFIX`]).
    pub username: String,
    /// Its password.
    pub password: String,
    /// The only keys it may touch: the dispatch's `out` and `in` streams.
    pub keys: Vec<String>,
}

impl std::fmt::Debug for DispatchUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchUser")
            .field("username", &self.username)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// A key as an ACL key pattern that matches only itself (glob characters escaped).
pub fn exact_pattern(key: &str) -> String {
    let mut p = String::with_capacity(key.len() + 2);
    for c in key.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p
}

/// The `ACL SETUSER` rules of `user`: everything it had is reset first, so applying them again
/// (a retried reconcile) gives the same user.
pub fn rules(user: &DispatchUser) -> Vec<String> {
    let mut rules = vec![
        "reset".to_owned(),
        "resetchannels".to_owned(),
        "-@all".to_owned(),
        format!(">{}", user.password),
    ];
    rules.extend(user.keys.iter().map(|k| format!("~{}", exact_pattern(k))));
    rules.extend(WORKER_COMMANDS.iter().map(|c| format!("+{c}")));
    rules.push("on".to_owned());
    rules
}

/// A client for `url` that authenticates as `username` with `password` (whatever the URL says
/// of credentials). The password is never part of a URL, so it is never logged with one.
pub fn client_as(url: &str, username: &str, password: &str) -> Result<Client, RedisError> {
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_username(username)
        .set_password(password);
    Client::open(info.set_redis_settings(settings))
}

/// Loads (or replaces) the library holding [`APPEND_FUNCTION`]. Needs an admin connection.
pub async fn load_library(conn: &mut impl ConnectionLike) -> Result<(), RedisError> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .query_async::<()>(conn)
        .await
}

/// Creates (or resets) a dispatch's user, with the library it appends through, and clears a
/// retention its streams may still have from an earlier run with the same id (a chat thread's
/// dispatch id is used again). One round trip, on an admin connection.
pub async fn set_user(
    conn: &mut impl ConnectionLike,
    user: &DispatchUser,
) -> Result<(), RedisError> {
    let mut pipe = redis::pipe();
    pipe.cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .ignore();
    pipe.cmd("ACL")
        .arg("SETUSER")
        .arg(&user.username)
        .arg(rules(user))
        .ignore();
    for key in &user.keys {
        pipe.cmd("PERSIST").arg(key).ignore();
    }
    pipe.query_async::<()>(conn).await
}

/// Deletes a dispatch's user (closing its connections) and lets its streams expire after
/// `retention` (`None`: they stay). Removing a user that is gone already is not an error.
pub async fn remove_user(
    conn: &mut impl ConnectionLike,
    username: &str,
    keys: &[String],
    retention: Option<Duration>,
) -> Result<(), RedisError> {
    let mut pipe = redis::pipe();
    pipe.cmd("ACL").arg("DELUSER").arg(username).ignore();
    if let Some(retention) = retention {
        let seconds = retention.as_secs().max(1);
        for key in keys {
            pipe.cmd("EXPIRE").arg(key).arg(seconds).ignore();
        }
    }
    pipe.query_async::<()>(conn).await
}

/// The names of every dispatch's user (those starting with [`USER_PREFIX`]).
pub async fn users(conn: &mut impl ConnectionLike) -> Result<Vec<String>, RedisError> {
    let all: Vec<String> = redis::cmd("ACL").arg("USERS").query_async(conn).await?;
    Ok(all
        .into_iter()
        .filter(|u| u.starts_with(USER_PREFIX))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_pattern_matches_only_its_key() {
        assert_eq!(exact_pattern("unit:ns/d1:out"), "unit:ns/d1:out");
        assert_eq!(exact_pattern("unit:*:out"), r"unit:\*:out");
        assert_eq!(exact_pattern(r"a?[b]\"), r"a\?\[b\]\\");
    }

    #[test]
    fn the_rules_reset_first_and_grant_only_the_streams_and_the_worker_commands() {
        let user = DispatchUser {
            username: "vexa-dispatch:ns/d1".into(),
            password: "pw".into(),
            keys: vec!["unit:ns/d1:out".into(), "unit:ns/d1:in".into()],
        };
        let r = rules(&user);
        assert_eq!(r[..3], ["reset", "resetchannels", "-@all"]);
        assert!(r.contains(&"~unit:ns/d1:out".to_owned()));
        assert!(r.contains(&"~unit:ns/d1:in".to_owned()));
        assert!(
            !r.iter()
                .any(|x| x.contains("eval") || x.contains("@") && x != "-@all")
        );
        assert_eq!(r.last().map(String::as_str), Some("on"));
        assert!(!format!("{user:?}").contains("pw"));
    }
}
