//! Serving the HTTP endpoints: plain or TLS, with optional basic auth, in
//! the style of Prometheus' exporter web configuration (PEM cert and key,
//! bcrypt-hashed users).

pub mod auth;

use std::{future::Future, io, sync::Arc, time::Duration};

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

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    web: &WebConfig,
    tls: Option<RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = if web.basic_auth_users.is_empty() {
        app
    } else {
        let auth = Arc::new(Auth::new(web.basic_auth_users.clone()));
        app.layer(middleware::from_fn_with_state(auth, require_auth))
    };
    match tls {
        None => {
            let l = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(l, app).with_graceful_shutdown(shutdown).await
        }
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                h.graceful_shutdown(Some(Duration::from_secs(5)));
            });
            axum_server::from_tcp_rustls(listener, tls)?
                .handle(handle)
                .serve(app.into_make_service())
                .await
        }
    }
}
