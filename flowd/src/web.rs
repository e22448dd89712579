//! Serving the HTTP endpoints: plain or TLS, with optional basic auth, in
//! the style of Prometheus' exporter web configuration (PEM cert and key,
//! bcrypt-hashed users).

use std::{
    collections::{BTreeMap, HashSet},
    future::Future,
    hash::{BuildHasher, RandomState},
    io,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use axum_server::tls_rustls::RustlsConfig;
use base64::Engine as _;

use crate::config::WebConfig;

/// Loads the TLS certificate and key, if configured (at start-up, so a bad
/// file is an error before anything is attached).
pub async fn tls(web: &WebConfig) -> io::Result<Option<RustlsConfig>> {
    if web.tls_cert_file.is_empty() {
        return Ok(None);
    }
    RustlsConfig::from_pem_file(&web.tls_cert_file, &web.tls_key_file)
        .await
        .map(Some)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "TLS certificate {} / key {}: {e}",
                    web.tls_cert_file, web.tls_key_file
                ),
            )
        })
}

/// Serves `app` on `listener` until `shutdown` completes, with the
/// connection limits of `web` (counted in `conns`).
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    web: &WebConfig,
    tls: Option<RustlsConfig>,
    conns: Arc<crate::listen::ConnStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = if web.basic_auth_users.is_empty() {
        app
    } else {
        let auth = Arc::new(Auth::new(web.basic_auth_users.clone()));
        app.layer(middleware::from_fn_with_state(auth, require_auth))
    };
    crate::listen::serve(
        listener,
        app,
        tls.map(|t| t.get_inner()),
        web.limits(),
        conns,
        shutdown,
    )
    .await
}

/// Basic-auth users and a cache of credentials already verified (bcrypt is
/// deliberately slow; Prometheus scrapes every few seconds).
#[derive(Debug)]
pub struct Auth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashSet<u64>>,
    hasher: RandomState,
}

const CACHE_MAX: usize = 256;

impl Auth {
    pub fn new(users: BTreeMap<String, String>) -> Self {
        Self {
            users,
            verified: Mutex::new(HashSet::new()),
            hasher: RandomState::new(),
        }
    }

    /// Whether an `Authorization` header value names a user with the right password.
    pub fn check(&self, authorization: Option<&str>) -> bool {
        let Some(encoded) = authorization.and_then(|a| a.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, pass)) = text.split_once(':') else {
            return false;
        };
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let key = self.hasher.hash_one((user, pass, hash));
        let mut cache = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.contains(&key) {
            return true;
        }
        drop(cache);
        let ok = bcrypt::verify(pass, hash).unwrap_or(false);
        if ok {
            cache = self
                .verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }
}

async fn require_auth(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let auth2 = Arc::clone(&auth);
    let ok = tokio::task::spawn_blocking(move || auth2.check(header.as_deref()))
        .await
        .unwrap_or(false);
    if ok {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"flowd\"")],
            "unauthorized\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_checks_bcrypt_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = Auth::new(BTreeMap::from([("prom".to_owned(), hash)]));
        let b64 = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(auth.check(Some(&b64("prom:s3cret"))));
        assert!(auth.check(Some(&b64("prom:s3cret"))), "cached");
        assert!(!auth.check(Some(&b64("prom:wrong"))));
        assert!(!auth.check(Some(&b64("other:s3cret"))));
        assert!(!auth.check(Some("Bearer x")));
        assert!(!auth.check(None));
    }
}
