//! Serving the HTTP endpoints: plain or TLS, with optional basic auth, in
//! the style of Prometheus' exporter web configuration (PEM cert and key,
//! bcrypt-hashed users).

pub mod auth;

use std::{future::Future, io, sync::Arc};

use axum::{Router, middleware};
use axum_server::tls_rustls::RustlsConfig;

use self::auth::{Auth, require_auth};
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
