//! What stands between a request and a handler: security headers on every answer, writes only
//! from the console's own pages (same origin and the session's CSRF token), and the signed-in
//! person, found from the session cookie.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use std::time::SystemTime;

use crate::App;
use crate::oidc::Renewal;
use crate::session::{Session, same_secret};

/// Only the console's own script and style; no inline code, no frames, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

/// The header a script sends its CSRF token in (forms send the field `csrf`).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Adds the security headers to every response.
pub async fn headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not `no-referrer`: with it, browsers send `Origin: null` on form posts, and the origin
        // check below could not tell the console's own forms from anybody's.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    res
}

/// Refuses a write (any method but GET and HEAD) that does not come from a page of this
/// console: its `Origin` must be this host (browsers send it on every POST), and a
/// `Sec-Fetch-Site` present must say `same-origin`.
pub async fn same_origin(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) || from_here(req.headers()) {
        return next.run(req).await;
    }
    (
        StatusCode::FORBIDDEN,
        "refused: a change must come from a page of this console (Origin and Sec-Fetch-Site)",
    )
        .into_response()
}

fn from_here(h: &HeaderMap) -> bool {
    let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let Some(host) = text("host") else {
        return false;
    };
    let origin_ok = text("origin").is_some_and(|o| {
        o.strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
            .is_some_and(|rest| rest == host)
    });
    let site_ok = text("sec-fetch-site").is_none_or(|s| s == "same-origin");
    origin_ok && site_ok
}

/// The signed-in person. A request without a live session is sent to sign in (pages) or
/// refused with 401 (everything else).
#[derive(Debug, Clone)]
pub struct SignedIn(pub Session);

impl FromRequestParts<App> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| app.sessions.id_in(c));
        let session = match id.and_then(|id| Some((id, app.sessions.get(id)?))) {
            Some((id, s)) => renewed(app, id, s).await,
            None => None,
        };
        match session {
            Some(s) => Ok(SignedIn(s)),
            None if parts.method == Method::GET && !wants_events(&parts.headers) => {
                Err(Redirect::to("/signin").into_response())
            }
            None => Err((StatusCode::UNAUTHORIZED, "sign in first").into_response()),
        }
    }
}

/// `s`, with its token renewed at the OpenID provider if it is about to expire; `None` if it
/// has expired and cannot be renewed (the session is over).
async fn renewed(app: &App, id: &str, mut s: Session) -> Option<Session> {
    let (Some(oidc), Some(r)) = (&app.oidc, &s.renewal) else {
        return Some(s);
    };
    let now = SystemTime::now();
    if !r.due(now) {
        return Some(s);
    }
    let renewed = match oidc.refresh(&r.refresh_token, &r.subject).await {
        Ok(tokens) => app
            .api
            .client_for(&tokens.id_token)
            .map_err(|e| e.to_string())
            .and_then(|client| Ok((client, Renewal::of(&tokens).ok_or("no refresh token")?)))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match renewed {
        Ok((client, renewal)) => {
            tracing::info!(user = %s.person.name, "renewed the sign-in token");
            app.sessions.renew(id, client.clone(), renewal.clone());
            s.client = client;
            s.renewal = Some(renewal);
            Some(s)
        }
        Err(e) if r.expired(now) => {
            tracing::info!(user = %s.person.name, error = %e, "the sign-in is over");
            app.sessions.end(id);
            None
        }
        Err(e) => {
            tracing::warn!(user = %s.person.name, error = %e, "renewing the sign-in token; retrying on the next request");
            Some(s)
        }
    }
}

fn wants_events(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

impl SignedIn {
    /// Refuses a write whose CSRF token (the form's `csrf` field, or the `x-csrf-token`
    /// header) is not this session's.
    pub fn check_csrf(&self, headers: &HeaderMap, field: Option<&str>) -> Result<(), StaleForm> {
        let sent = field.or_else(|| headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()));
        match sent {
            Some(t) if same_secret(t, &self.0.csrf) => Ok(()),
            _ => Err(StaleForm),
        }
    }
}

/// A write without this session's CSRF token.
#[derive(Debug, Clone, Copy)]
pub struct StaleForm;

impl IntoResponse for StaleForm {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            "refused: the form is stale or did not come from this console; reload the page",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[rstest]
    #[case::same(&[("host", "console:8080"), ("origin", "http://console:8080"), ("sec-fetch-site", "same-origin")], true)]
    #[case::https(&[("host", "vexa.example"), ("origin", "https://vexa.example")], true)]
    #[case::other_site(&[("host", "console:8080"), ("origin", "https://evil.example")], false)]
    #[case::lookalike(&[("host", "console"), ("origin", "https://console.evil.example")], false)]
    #[case::cross_site_fetch(&[("host", "console"), ("origin", "https://console"), ("sec-fetch-site", "cross-site")], false)]
    #[case::no_origin(&[("host", "console")], false)]
    #[case::null_origin(&[("host", "console"), ("origin", "null")], false)]
    fn writes_only_from_here(#[case] pairs: &[(&'static str, &'static str)], #[case] ok: bool) {
        assert_eq!(from_here(&h(pairs)), ok);
    }
}
