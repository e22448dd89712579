//! Basic auth that an attacker cannot turn against the exporter:
//!
//! - bcrypt runs on a small pool ([`Auth::permits`]); a request waits at
//!   most [`QUEUE_WAIT`] for a slot (without a thread) and is then answered
//!   429 with `Retry-After`, so wrong passwords cost a bounded amount of
//!   CPU and threads, and a flood of them is slowed to the pool's pace
//!   rather than answered as fast as the CPUs allow;
//! - an unknown user is checked against a dummy hash of the users' cost, so
//!   the answer takes as long as for a known user (no user enumeration);
//! - credentials that passed are remembered for [`CACHE_TTL`] after their
//!   last use, keyed by a keyed 128-bit hash of user and password (as
//!   Prometheus' exporter-toolkit does), so a scraper skips bcrypt and the
//!   pool: an attack on the pool does not slow authorized scrapes.
//!
//! Hashes and user names are checked when the configuration loads
//! ([`check_user`]): a hash that can never match is an error, not a lockout.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use tokio::sync::Semaphore;

/// How long a verified credential is remembered after its last use.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// Longest a request waits for a bcrypt slot before it is answered 429.
pub const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// Most credentials remembered; beyond, the least recently used is forgotten.
const CACHE_MAX: usize = 256;
use crate::config::COSTS;
pub use crate::config::check_user;

/// Basic-auth users, the bcrypt pool and the cache of verified credentials.
#[derive(Debug)]
pub struct Auth {
    users: BTreeMap<String, String>,
    /// Checked for unknown users: a hash no password matches, with the
    /// highest cost among the users.
    dummy: String,
    pool: Arc<Semaphore>,
    cache: Mutex<HashMap<u128, Instant>>,
    keys: (RandomState, RandomState),
}

/// What a request's `Authorization` header gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Every bcrypt slot is busy: try again later.
    Busy,
}

impl Auth {
    /// `users` as validated by [`check_user`].
    pub fn new(users: BTreeMap<String, String>) -> Self {
        let cost = users
            .values()
            .filter_map(|h| h.get(4..6)?.parse::<u32>().ok())
            .filter(|c| COSTS.contains(c))
            .max()
            .unwrap_or(10);
        Self {
            users,
            dummy: dummy_hash(cost),
            pool: Arc::new(Semaphore::new(Self::permits())),
            cache: Mutex::new(HashMap::new()),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    /// bcrypt checks at a time: half the CPUs, one to four. The rest stay
    /// free for scrapes and the drain; Prometheus needs one check per
    /// credential every [`CACHE_TTL`] at most.
    pub fn permits() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 4))
    }

    fn key(&self, user: &str, pass: &str) -> u128 {
        let (a, b) = &self.keys;
        (u128::from(a.hash_one((user, pass))) << 64) | u128::from(b.hash_one((user, pass)))
    }

    /// Whether `key` passed bcrypt within the last [`CACHE_TTL`]; a hit
    /// extends it.
    fn cached(&self, key: u128, now: Instant) -> bool {
        let mut c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match c.get_mut(&key) {
            Some(t) if now.duration_since(*t) < CACHE_TTL => {
                *t = now;
                true
            }
            Some(_) => {
                c.remove(&key);
                false
            }
            None => false,
        }
    }

    fn remember(&self, key: u128, now: Instant) {
        let mut c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if c.len() >= CACHE_MAX {
            c.retain(|_, t| now.duration_since(*t) < CACHE_TTL);
        }
        if c.len() >= CACHE_MAX
            && let Some(oldest) = c.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
        {
            c.remove(&oldest);
        }
        c.insert(key, now);
    }

    /// Up to the bcrypt check: a verdict without bcrypt (malformed or
    /// cached), or what bcrypt needs.
    fn begin(&self, authorization: Option<&str>) -> Result<Verdict, Pending> {
        let Some((user, pass)) = credentials(authorization) else {
            return Ok(Verdict::Denied);
        };
        let key = self.key(&user, &pass);
        if self.cached(key, Instant::now()) {
            return Ok(Verdict::Allowed);
        }
        Err(Pending { user, pass, key })
    }

    /// The whole check without waiting for a slot, bcrypt on the calling thread.
    pub fn check(&self, authorization: Option<&str>) -> Verdict {
        match self.begin(authorization) {
            Ok(v) => v,
            Err(p) => match self.pool.try_acquire() {
                Ok(_slot) => self.verify(&p),
                Err(_) => Verdict::Busy,
            },
        }
    }

    /// bcrypt against the user's hash, or the dummy for an unknown user
    /// (the same work, so the same time).
    fn verify(&self, p: &Pending) -> Verdict {
        let (hash, known) = match self.users.get(&p.user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy.as_str(), false),
        };
        let matches = bcrypt::verify(&p.pass, hash).unwrap_or(false);
        if matches && known {
            self.remember(p.key, Instant::now());
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

/// A credential waiting for bcrypt.
struct Pending {
    user: String,
    pass: String,
    key: u128,
}

/// `$2b$<cost>$` and 53 characters that decode to zero salt and zero hash:
/// a well-formed hash that bcrypt computes at full cost and no password
/// matches (bcrypt's output is never 23 zero bytes in practice).
fn dummy_hash(cost: u32) -> String {
    format!("$2b${cost:02}${}", ".".repeat(53))
}

/// User and password of a `Basic` header value.
fn credentials(authorization: Option<&str>) -> Option<(String, String)> {
    let encoded = authorization?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// The middleware: every path but `/healthz` needs credentials.
pub async fn require_auth(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let verdict = match auth.begin(value.as_deref()) {
        Ok(v) => v,
        // The slot is taken before the thread: a busy pool costs no thread.
        Err(p) => {
            match tokio::time::timeout(QUEUE_WAIT, Arc::clone(&auth.pool).acquire_owned()).await {
                Ok(Ok(slot)) => {
                    let a = Arc::clone(&auth);
                    tokio::task::spawn_blocking(move || {
                        let v = a.verify(&p);
                        drop(slot);
                        v
                    })
                    .await
                    .unwrap_or(Verdict::Denied)
                }
                _ => Verdict::Busy,
            }
        }
    };
    match verdict {
        Verdict::Allowed => next.run(req).await,
        Verdict::Denied => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"flowd\"")],
            "unauthorized\n",
        )
            .into_response(),
        Verdict::Busy => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "too many authentication attempts at once; retry later\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
