use super::*;

fn b64(s: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(s)
    )
}

#[test]
fn basic_auth_checks_bcrypt_and_caches() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let auth = Auth::new(BTreeMap::from([("prom".to_owned(), hash)]));
    assert_eq!(auth.check(Some(&b64("prom:s3cret"))), Verdict::Allowed);
    assert_eq!(auth.cache.lock().unwrap().len(), 1, "remembered");
    assert_eq!(auth.check(Some(&b64("prom:s3cret"))), Verdict::Allowed);
    assert_eq!(auth.check(Some(&b64("prom:wrong"))), Verdict::Denied);
    assert_eq!(auth.check(Some(&b64("other:s3cret"))), Verdict::Denied);
    assert_eq!(auth.check(Some("Bearer x")), Verdict::Denied);
    assert_eq!(auth.check(None), Verdict::Denied);
    assert_eq!(
        auth.cache.lock().unwrap().len(),
        1,
        "failures are not cached"
    );
}

#[test]
fn a_busy_pool_answers_busy_but_cached_credentials_pass() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let auth = Auth::new(BTreeMap::from([("prom".to_owned(), hash)]));
    assert_eq!(auth.check(Some(&b64("prom:s3cret"))), Verdict::Allowed);
    let _all: Vec<_> = (0..Auth::permits())
        .map(|_| Arc::clone(&auth.pool).try_acquire_owned().unwrap())
        .collect();
    assert_eq!(auth.check(Some(&b64("prom:wrong"))), Verdict::Busy);
    assert_eq!(auth.check(Some(&b64("nobody:x"))), Verdict::Busy);
    assert_eq!(auth.check(Some(&b64("prom:s3cret"))), Verdict::Allowed);
}

#[test]
fn cache_entries_expire_and_the_cache_is_bounded() {
    let auth = Auth::new(BTreeMap::new());
    let t0 = Instant::now();
    auth.remember(1, t0);
    assert!(auth.cached(1, t0 + CACHE_TTL / 2));
    // The hit extended it.
    assert!(auth.cached(1, t0 + CACHE_TTL));
    assert!(!auth.cached(1, t0 + CACHE_TTL * 3));
    for k in 0..(CACHE_MAX as u128 + 10) {
        auth.remember(k, t0 + Duration::from_millis(k as u64));
    }
    let c = auth.cache.lock().unwrap();
    assert_eq!(c.len(), CACHE_MAX);
    assert!(!c.contains_key(&0), "the least recently used went first");
}

#[test]
fn the_dummy_hash_is_well_formed_with_the_users_cost() {
    for cost in [4, 10, 31] {
        let d = dummy_hash(cost);
        assert_eq!(check_user("x", &d), Ok(()), "{d}");
        assert_eq!(
            <bcrypt::HashParts as std::str::FromStr>::from_str(&d)
                .unwrap()
                .get_cost(),
            cost
        );
    }
    let users = BTreeMap::from([
        ("a".to_owned(), bcrypt::hash("p", 4).unwrap()),
        ("b".to_owned(), bcrypt::hash("p", 5).unwrap()),
    ]);
    assert!(Auth::new(users).dummy.starts_with("$2b$05$"));
    assert!(!bcrypt::verify("", &dummy_hash(4)).unwrap());
}

#[test]
fn users_and_hashes_that_can_never_match_are_refused() {
    let good = bcrypt::hash("p", 4).unwrap();
    assert_eq!(check_user("prom", &good), Ok(()));
    for prefix in ["$2a$", "$2y$"] {
        assert_eq!(
            check_user("prom", &good.replacen("$2b$", prefix, 1)),
            Ok(())
        );
    }
    let err = |u: &str, h: &str| check_user(u, h).unwrap_err();
    assert!(err("", &good).contains("empty"));
    assert!(err("a:b", &good).contains("':'"));
    assert!(err("prom", "$2b$").contains("not a bcrypt hash"));
    assert!(err("prom", &good.replacen("$04$", "$99$", 1)).contains("cost 99, outside 4 to 31"));
    assert!(err("prom", &good.replacen("$04$", "$03$", 1)).contains("cost 3"));
    assert!(err("prom", &good.replacen("$2b$", "$2x$", 1)).contains("$2a$, $2b$ or $2y$"));
    assert!(err("prom", "plaintext").contains("$2a$, $2b$ or $2y$"));
    assert!(err("prom", &format!("{good}x")).contains("not a bcrypt hash"));
    assert!(err("prom", &good[..59]).contains("not a bcrypt hash"));
}
