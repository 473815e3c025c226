//! The console's cookies: `HttpOnly`, for `/`, `Secure` unless the console was told to serve
//! plain HTTP, and then named with the `__Host-` prefix, which makes browsers refuse the cookie
//! unless it is Secure, host-only and for `/`.

use std::time::Duration;

/// One cookie's name and attributes.
#[derive(Debug, Clone, Copy)]
pub struct Cookie {
    secure_name: &'static str,
    plain_name: &'static str,
    same_site: &'static str,
    max_age: Duration,
    secure: bool,
}

impl Cookie {
    /// A cookie named `secure_name` (`__Host-…`) when `secure`, else `plain_name`.
    pub const fn new(
        secure_name: &'static str,
        plain_name: &'static str,
        same_site: &'static str,
        max_age: Duration,
        secure: bool,
    ) -> Self {
        Self {
            secure_name,
            plain_name,
            same_site,
            max_age,
            secure,
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        if self.secure {
            self.secure_name
        } else {
            self.plain_name
        }
    }

    /// The `Set-Cookie` value that gives the browser `value`.
    pub fn set(&self, value: &str) -> String {
        self.header(value, self.max_age)
    }

    /// The `Set-Cookie` value that removes it.
    pub fn clear(&self) -> String {
        self.header("", Duration::ZERO)
    }

    /// Its value in a `Cookie` header, if any.
    pub fn find<'a>(&self, cookie_header: &'a str) -> Option<&'a str> {
        cookie_header
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == self.name())
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
    }

    fn header(&self, value: &str, max_age: Duration) -> String {
        format!(
            "{}={value}; Path=/; HttpOnly; SameSite={}; Max-Age={}{}",
            self.name(),
            self.same_site,
            max_age.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }
}
