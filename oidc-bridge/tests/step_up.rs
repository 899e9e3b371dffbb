//! RFC 9470 at a resource server: a real axum API behind `step_up::require`, real tokens
//! from the provider. A loa:0 token is refused with `insufficient_user_authentication` and
//! the `acr_values` to ask for; after the TOTP step-up the new token passes; `max_age`
//! refuses an old authentication; missing, forged and foreign tokens get RFC 6750 answers.

mod common;

use std::sync::Arc;

use common::*;
use habitus_oidc::step_up::{require, AccessClaims, Guard, PublicKeys, Requirement};

/// Serves `/strong` (loa:2) and `/fresh` (any level, authenticated ≤ 2 s ago) on loopback.
fn resource_server(issuer: &str) -> String {
    let jwks = http("GET", &format!("{issuer}/jwks"), &[], b"").json();
    let guard = |acr: &str, max_age| {
        Arc::new(
            Guard::new(
                issuer,
                PublicKeys::from_jwks(&jwks).expect("jwks"),
                Requirement {
                    acr: acr.into(),
                    max_age,
                },
            )
            .expect("guard"),
        )
    };
    let whoami = |axum::Extension(AccessClaims(c)): axum::Extension<AccessClaims>| async move {
        c["sub"].as_str().unwrap_or("").to_string()
    };
    let app = axum::Router::new()
        .route(
            "/strong",
            axum::routing::get(whoami).layer(axum::middleware::from_fn_with_state(
                guard("urn:habitus:loa:2", None),
                require,
            )),
        )
        .route(
            "/fresh",
            axum::routing::get(whoami).layer(axum::middleware::from_fn_with_state(
                guard("urn:habitus:loa:0", Some(2)),
                require,
            )),
        );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    format!("http://{addr}")
}

fn get(url: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    http("GET", url, &headers, b"")
}

fn access_token_after(r: &Reply, issuer: &str, pk: &Pkce) -> String {
    assert_eq!(r.status, 303, "{}", r.text());
    let t = exchange(issuer, "rp", &r.location_query()["code"], pk);
    assert_eq!(t.status, 200, "{}", t.text());
    t.json()["access_token"].as_str().unwrap().to_string()
}

#[test]
fn resource_server_asks_for_step_up_and_accepts_the_stronger_token() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let api = resource_server(issuer);

    // A plain password login (no behaviour evidence): loa:0.
    let pk = pkce();
    let r = browser_login(issuer, "rp", "alice", &[], Vec::new(), &pk, "n");
    let weak = access_token_after(&r, issuer, &pk);
    assert_eq!(claims_of(&weak)["acr"], "urn:habitus:loa:0");
    let denied = get(&format!("{api}/strong"), Some(&weak));
    assert_eq!(denied.status, 401);
    let challenge = denied.header("www-authenticate").expect("challenge");
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_user_authentication\"")
            && challenge.contains("acr_values=\"urn:habitus:loa:2\""),
        "{challenge}"
    );
    // Fresh enough for /fresh (authenticated just now).
    let ok = get(&format!("{api}/fresh"), Some(&weak));
    assert_eq!((ok.status, ok.text()), (200, "alice".to_string()));

    // The client follows the challenge: acr_values from it, TOTP as the step-up factor.
    let pk = pkce();
    let r = browser_login(
        issuer,
        "rp",
        "alice",
        &[("acr_values", "urn:habitus:loa:2")],
        Vec::new(),
        &pk,
        "n",
    );
    assert!(r.text().contains("/login/totp"), "{}", r.text());
    let r = post_totp(issuer, &tx_of(&r), &totp_code(0));
    let strong = access_token_after(&r, issuer, &pk);
    assert_eq!(claims_of(&strong)["acr"], "urn:habitus:loa:2");
    let ok = get(&format!("{api}/strong"), Some(&strong));
    assert_eq!((ok.status, ok.text()), (200, "alice".to_string()));

    // max_age: the same token, three seconds later, is too old for /fresh.
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let old = get(&format!("{api}/fresh"), Some(&strong));
    assert_eq!(old.status, 401);
    let challenge = old.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("insufficient_user_authentication")
            && challenge.contains("max_age=\"2\""),
        "{challenge}"
    );

    // RFC 6750 answers: no token, garbage, a tampered token, an ID token.
    let none = get(&format!("{api}/strong"), None);
    assert_eq!(
        (none.status, none.header("www-authenticate")),
        (401, Some("Bearer"))
    );
    let mut tampered = strong.clone().into_bytes();
    let mid = strong.find('.').unwrap() + 3;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let id_token = {
        let pk = pkce();
        let r = browser_login(issuer, "rp", "bob", &[], Vec::new(), &pk, "n");
        assert_eq!(r.status, 303, "{}", r.text());
        exchange(issuer, "rp", &r.location_query()["code"], &pk).json()["id_token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for bad in [
        "garbage".to_string(),
        String::from_utf8(tampered).unwrap(),
        id_token,
    ] {
        let r = get(&format!("{api}/strong"), Some(&bad));
        assert_eq!(r.status, 401, "{bad}");
        let c = r.header("www-authenticate").unwrap();
        assert!(c.contains("error=\"invalid_token\""), "{c}");
    }
}

#[test]
fn guard_refuses_unknown_levels_and_bad_key_sets() {
    let jwks = serde_json::json!({"keys": [{"kty": "oct", "k": "AAAA"}]});
    assert!(PublicKeys::from_jwks(&jwks).is_err());
    assert!(PublicKeys::from_jwks(&serde_json::json!({})).is_err());
    let bad_x =
        serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": "!!"}]});
    assert!(PublicKeys::from_jwks(&bad_x)
        .err()
        .is_some_and(|e| e.contains("base64url")));
    let ok = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "k", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]});
    let keys = PublicKeys::from_jwks(&ok).unwrap();
    let err = Guard::new(
        "https://id.example",
        keys,
        Requirement {
            acr: "gold".into(),
            max_age: None,
        },
    )
    .err()
    .unwrap();
    assert!(err.contains("unknown acr"), "{err}");
}
