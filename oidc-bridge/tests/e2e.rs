//! End to end over real HTTP on a loopback port: discovery, code flow with PKCE, ID tokens
//! verified with openidconnect against the published JWKS (RS256 and EdDSA), the behaviour
//! claim through enrolment and scoring, userinfo (GET and POST body), refresh rotation,
//! step-up with TOTP, end-session.

mod common;

use common::*;
use habitus_oidc::provider::HabitusIdToken;
use openidconnect::core::{CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::{ClientId, ClientSecret, IdTokenVerifier, IssuerUrl, Nonce};
use std::str::FromStr;

fn verify(
    issuer: &str,
    client: &str,
    id_token: &str,
    nonce: &str,
    alg: CoreJwsSigningAlgorithm,
) -> serde_json::Value {
    let metadata =
        CoreProviderMetadata::discover(&IssuerUrl::new(issuer.into()).expect("issuer"), &oidc_http)
            .expect("discovery (openidconnect)");
    let verifier = IdTokenVerifier::new_confidential_client(
        ClientId::new(client.into()),
        ClientSecret::new(SECRET.into()),
        metadata.issuer().clone(),
        metadata.jwks().clone(),
    )
    .set_allowed_algs(vec![alg]);
    let token = HabitusIdToken::from_str(id_token).expect("ID token parses");
    let claims = token
        .claims(&verifier, &Nonce::new(nonce.into()))
        .expect("ID token verifies (signature, iss, aud, exp, nonce)");
    serde_json::to_value(claims).expect("claims")
}

#[test]
fn discovery_document_is_complete() {
    let p = start("");
    let d = http(
        "GET",
        &format!("{}/.well-known/openid-configuration", p.issuer),
        &[],
        b"",
    )
    .json();
    assert_eq!(d["issuer"], p.issuer.as_str());
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(d["claims_parameter_supported"], true);
    assert_eq!(
        d["acr_values_supported"],
        serde_json::json!([
            "urn:habitus:loa:0",
            "urn:habitus:loa:1",
            "urn:habitus:loa:2"
        ])
    );
    assert!(d["claims_supported"]
        .as_array()
        .expect("array")
        .iter()
        .any(|c| c == "urn:habitus:behavior"));
    let algs = d["id_token_signing_alg_values_supported"].to_string();
    assert!(algs.contains("EdDSA") && algs.contains("RS256"), "{algs}");
    let jwks = http("GET", &format!("{}/jwks", p.issuer), &[], b"").json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids.len(), 2, "{jwks}");
}

#[test]
fn code_flow_enrolment_claims_userinfo_refresh_logout() {
    let p = start(PASSWORD_ONLY_ENROLMENT);
    let issuer = p.issuer.as_str();

    // First login: nothing enrolled yet, behaviour collected for enrolment.
    let pk = pkce();
    let r = browser_login(
        issuer,
        "rp",
        "alice",
        &[],
        typist(12, 95.0, 190.0, 1, 100),
        &pk,
        "nonce-1",
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let q = r.location_query();
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], issuer);
    let t = exchange(issuer, "rp", &q["code"], &pk);
    assert_eq!(t.status, 200, "{}", t.text());
    assert_eq!(t.header("cache-control"), Some("no-store"));
    let tokens = t.json();
    let c = verify(
        issuer,
        "rp",
        tokens["id_token"].as_str().expect("id_token"),
        "nonce-1",
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    );
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["acr"], "urn:habitus:loa:0");
    assert_eq!(c["urn:habitus:behavior"]["state"], "learning");
    assert!(c["auth_time"].is_number() && c["sid"].is_string());
    assert_eq!(c["amr"], serde_json::json!(["pwd"]));

    // The reused code fails, and revokes what it produced (its session included).
    let again = exchange(issuer, "rp", &q["code"], &pk);
    assert_eq!(again.status, 400);
    assert_eq!(again.json()["error"], "invalid_grant");
    let refreshed = token(
        issuer,
        "rp",
        &[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                tokens["refresh_token"].as_str().expect("rt"),
            ),
        ],
    );
    assert_eq!(
        refreshed.json()["error"],
        "invalid_grant",
        "refresh token of a replayed code"
    );

    // Four more logins finish enrolment (5 windows).
    enrol(issuer, "alice", 4);

    // Genuine typing after enrolment: behaviour is scored.
    let pk = pkce();
    let r = browser_login(
        issuer,
        "rp-ed",
        "alice",
        &[],
        typist(12, 95.0, 190.0, 1, 200),
        &pk,
        "nonce-2",
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .and_then(|c| c.strip_prefix("habitus_oidc_session="))
        .expect("session cookie")
        .to_string();
    let q = r.location_query();
    let tokens = exchange(issuer, "rp-ed", &q["code"], &pk).json();
    let id_token = tokens["id_token"].as_str().expect("id_token");
    let c = verify(
        issuer,
        "rp-ed",
        id_token,
        "nonce-2",
        CoreJwsSigningAlgorithm::EdDsa,
    );
    let b = &c["urn:habitus:behavior"];
    eprintln!("genuine login: acr {} behavior {b}", c["acr"]);
    assert!(
        matches!(b["state"].as_str(), Some("trusted" | "uncertain")),
        "{b}"
    );
    assert_ne!(c["acr"], "urn:habitus:loa:0");
    assert_eq!(b["modalities"], serde_json::json!(["keystroke"]));
    assert!(c["amr"].as_array().expect("amr").iter().any(|m| m == "rba"));
    assert!(b["evaluated_at"].is_number() && b["trust"].is_number());

    // userinfo: GET with bearer, POST with the token in the body (RFC 6750 §2.2); both
    // equal the ID token's claims.
    let at = tokens["access_token"].as_str().expect("at");
    let ui_get = http(
        "GET",
        &format!("{issuer}/userinfo"),
        &[("Authorization", &format!("Bearer {at}"))],
        b"",
    );
    assert_eq!(ui_get.status, 200, "{}", ui_get.text());
    let ui_post = http(
        "POST",
        &format!("{issuer}/userinfo"),
        &[FORM],
        &form(&[("access_token", at)]),
    );
    assert_eq!(ui_post.status, 200, "{}", ui_post.text());
    let (g, po) = (ui_get.json(), ui_post.json());
    assert_eq!(g, po);
    for k in ["sub", "preferred_username", "urn:habitus:behavior"] {
        assert_eq!(g[k], c[k], "{k}");
    }
    let bad = http(
        "GET",
        &format!("{issuer}/userinfo"),
        &[("Authorization", "Bearer x.y.z")],
        b"",
    );
    assert_eq!(bad.status, 401);
    assert!(bad
        .header("www-authenticate")
        .unwrap_or("")
        .contains("invalid_token"));

    // Refresh: rotation; the old token is single use.
    let rt = tokens["refresh_token"].as_str().expect("rt");
    let r1 = token(
        issuer,
        "rp-ed",
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    );
    assert_eq!(r1.status, 200, "{}", r1.text());
    let r1 = r1.json();
    assert_eq!(
        claims_of(r1["id_token"].as_str().expect("id"))["auth_time"],
        c["auth_time"]
    );
    let r2 = token(
        issuer,
        "rp-ed",
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    );
    assert_eq!(r2.json()["error"], "invalid_grant");
    let wrong_client = token(
        issuer,
        "rp",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", r1["refresh_token"].as_str().expect("rt")),
        ],
    );
    assert_eq!(wrong_client.json()["error"], "invalid_grant");

    // Single sign-on: the first session's cookie gets a code without a login page...
    let pk = pkce();
    let sso = authorize(
        issuer,
        &[
            ("response_type", "code"),
            ("client_id", "rp"),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("scope", "openid"),
            ("code_challenge", &pk.challenge),
            ("code_challenge_method", "S256"),
        ],
        Some(&cookie),
    );
    assert_eq!(sso.status, 303, "{}", sso.text());
    assert!(sso.location_query().contains_key("code"));
    // ...but not with prompt=login, nor max_age=0 after a second.
    let forced = authorize(
        issuer,
        &[
            ("response_type", "code"),
            ("client_id", "rp"),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("scope", "openid"),
            ("code_challenge", &pk.challenge),
            ("code_challenge_method", "S256"),
            ("prompt", "login"),
        ],
        Some(&cookie),
    );
    assert_eq!(forced.status, 200);
    tx_of(&forced);
    // ...and prompt=none at a higher level than the session has: login_required.
    let none = authorize(
        issuer,
        &[
            ("response_type", "code"),
            ("client_id", "rp"),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("scope", "openid"),
            ("code_challenge", &pk.challenge),
            ("code_challenge_method", "S256"),
            ("prompt", "none"),
            ("acr_values", "urn:habitus:loa:2"),
        ],
        Some(&cookie),
    );
    assert_eq!(none.location_query()["error"], "login_required");

    // End session with the hint: tokens of that session stop working.
    let out = http("GET", &format!("{issuer}/end_session?id_token_hint={id_token}&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fbye&state=s9"), &[], b"");
    assert_eq!(
        out.status, 200,
        "rp-ed registered no post-logout URI: page, no redirect"
    );
    let after = http(
        "GET",
        &format!("{issuer}/userinfo"),
        &[("Authorization", &format!("Bearer {at}"))],
        b"",
    );
    assert_eq!(after.status, 401);
    let rt_after = token(
        issuer,
        "rp-ed",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", r1["refresh_token"].as_str().expect("rt")),
        ],
    );
    assert_eq!(rt_after.json()["error"], "invalid_grant");
}

#[test]
fn step_up_with_totp_when_behaviour_cannot_reach_the_level() {
    let p = start(PASSWORD_ONLY_ENROLMENT);
    let issuer = p.issuer.as_str();
    enrol(issuer, "alice", 5);
    enrol(issuer, "bob", 5);

    // An impostor's rhythm (different habits) asking for loa:2: the TOTP page.
    let pk = pkce();
    let r = browser_login(
        issuer,
        "rp",
        "alice",
        &[("acr_values", "urn:habitus:loa:2")],
        typist(12, 150.0, 330.0, 77, 1),
        &pk,
        "n",
    );
    assert_eq!(r.status, 200, "step-up page expected: {}", r.text());
    assert!(r.text().contains("/login/totp"));
    let tx = tx_of(&r);
    let wrong = post_totp(issuer, &tx, "000000");
    assert!(wrong.text().contains("Wrong"), "{}", wrong.text());
    let code = totp_code(0);
    let ok = post_totp(issuer, &tx, &code);
    assert_eq!(ok.status, 303, "{}", ok.text());
    let q = ok.location_query();
    let c = claims_of(
        exchange(issuer, "rp", &q["code"], &pk).json()["id_token"]
            .as_str()
            .expect("id"),
    );
    assert_eq!(c["acr"], "urn:habitus:loa:2");
    let amr = c["amr"].to_string();
    assert!(amr.contains("otp") && amr.contains("pwd"), "{amr}");
    eprintln!("impostor behaviour: {}", c["urn:habitus:behavior"]);
    assert_ne!(c["urn:habitus:behavior"]["state"], "trusted");

    // The same TOTP code cannot be used twice.
    let pk2 = pkce();
    let r = browser_login(
        issuer,
        "rp",
        "alice",
        &[("acr_values", "urn:habitus:loa:2")],
        typist(12, 150.0, 330.0, 77, 2),
        &pk2,
        "n",
    );
    let tx = tx_of(&r);
    let reuse = post_totp(issuer, &tx, &code);
    assert_eq!(reuse.status, 200);
    assert!(reuse.text().contains("already used"));

    // bob has no TOTP: an essential acr he cannot reach fails with the OpenID error...
    let claims = r#"{"id_token":{"acr":{"essential":true,"value":"urn:habitus:loa:2"}}}"#;
    let pk = pkce();
    let r = browser_login(
        issuer,
        "rp",
        "bob",
        &[("claims", claims)],
        typist(12, 150.0, 330.0, 77, 3),
        &pk,
        "n",
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.location_query()["error"],
        "unmet_authentication_requirements"
    );
    // ...while voluntary acr_values sign him in at the level reached.
    let pk = pkce();
    let r = browser_login(
        issuer,
        "rp",
        "bob",
        &[("acr_values", "urn:habitus:loa:2")],
        typist(12, 150.0, 330.0, 77, 4),
        &pk,
        "n",
    );
    let q = r.location_query();
    let c = claims_of(
        exchange(issuer, "rp", &q["code"], &pk).json()["id_token"]
            .as_str()
            .expect("id"),
    );
    assert_ne!(c["acr"], "urn:habitus:loa:2");
}

/// Signs `user` in with `scope` (no behaviour events) and returns the verified ID token's
/// claims and the userinfo answer.
fn sign_in_with_scope(
    issuer: &str,
    user: &str,
    scope: &str,
) -> (serde_json::Value, serde_json::Value) {
    let pk = pkce();
    let tx = open_login(issuer, &auth_params("rp", scope, "n-email", &pk));
    let r = post_login(issuer, &tx, user, PASSWORD);
    assert_eq!(r.status, 303, "{}", r.text());
    let t = exchange(issuer, "rp", &r.location_query()["code"], &pk).json();
    let id = verify(
        issuer,
        "rp",
        t["id_token"].as_str().expect("id_token"),
        "n-email",
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    );
    let at = t["access_token"].as_str().expect("access_token");
    let ui = http(
        "GET",
        &format!("{issuer}/userinfo"),
        &[("Authorization", &format!("Bearer {at}"))],
        b"",
    );
    assert_eq!(ui.status, 200, "{}", ui.text());
    (id, ui.json())
}

#[test]
fn email_scope_releases_the_users_file_address() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let d = http(
        "GET",
        &format!("{issuer}/.well-known/openid-configuration"),
        &[],
        b"",
    )
    .json();
    assert!(d["scopes_supported"]
        .as_array()
        .expect("scopes")
        .contains(&"email".into()));
    assert!(d["claims_supported"]
        .as_array()
        .expect("claims")
        .contains(&"email_verified".into()));

    // With the scope: the address and its verification flag, in both places.
    let (id, ui) = sign_in_with_scope(issuer, "alice", "openid email");
    for c in [&id, &ui] {
        assert_eq!(c["email"], "alice@example.com", "{c}");
        assert_eq!(c["email_verified"], true, "{c}");
    }
    // Without the scope, or for a user without an address: neither claim.
    let (id, ui) = sign_in_with_scope(issuer, "alice", "openid profile");
    let (id_b, ui_b) = sign_in_with_scope(issuer, "bob", "openid email");
    for c in [&id, &ui, &id_b, &ui_b] {
        assert!(
            c.get("email").is_none() && c.get("email_verified").is_none(),
            "{c}"
        );
    }
}

fn behaviour_of(issuer: &str, r: &Reply, pk: &Pkce) -> serde_json::Value {
    assert_eq!(r.status, 303, "{}", r.text());
    let q = r.location_query();
    claims_of(
        exchange(issuer, "rp", &q["code"], pk).json()["id_token"]
            .as_str()
            .expect("id_token"),
    )
}

/// Two enrolment logins, so a test can pass the code at each within one 30 s step.
const TWO_LOGIN_ENROLMENT: &str =
    "\n[behavior.plugins.keystroke]\nconfig = 'mode = \"fixed\"'\nwindow = \"login\"\nenrol_windows = 2\n";

#[test]
fn only_completed_logins_teach_and_totp_users_enrol_with_the_code() {
    let p = start(TWO_LOGIN_ENROLMENT);
    let issuer = p.issuer.as_str();
    let essential = r#"{"id_token":{"acr":{"essential":true,"value":"urn:habitus:loa:2"}}}"#;
    let attacker = |login: u64| typist(12, 150.0, 330.0, 77, login);
    let genuine = |login: u64| typist(12, 95.0, 190.0, 1, login);

    // Someone with alice's password but not her code, asking for loa:2 and abandoning
    // every login at the code prompt: nothing is learned from those logins, so a later
    // one with the same rhythm still meets the prompt (before, the abandoned logins built
    // alice's profile from the attacker's typing, and the sixth passed as `trusted`).
    for login in 0..4 {
        let pk = pkce();
        let r = browser_login(
            issuer,
            "rp",
            "alice",
            &[("claims", essential)],
            attacker(login),
            &pk,
            "n",
        );
        assert_eq!(r.status, 200, "login {login}: {}", r.text());
        assert!(r.text().contains("/login/totp"), "login {login}");
    }

    // alice enrols: while she is learning, every login asks for her code, even when the
    // relying party asked for no level; logins that pass it are learned from.
    for (login, offset) in [(0u64, 0u64), (1, 30)] {
        let pk = pkce();
        let r = browser_login(issuer, "rp", "alice", &[], genuine(login), &pk, "n");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("/login/totp"), "enrolment login {login}");
        let done = post_totp(issuer, &tx_of(&r), &totp_code(offset));
        let c = behaviour_of(issuer, &done, &pk);
        assert_eq!(c["acr"], "urn:habitus:loa:2", "the code was passed");
        assert_eq!(c["urn:habitus:behavior"]["state"], "learning", "{c}");
    }

    // Enrolled from her own two logins: her next login is scored and needs no code.
    let pk = pkce();
    let r = browser_login(issuer, "rp", "alice", &[], genuine(2), &pk, "n");
    let c = behaviour_of(issuer, &r, &pk);
    let state = c["urn:habitus:behavior"]["state"].clone();
    assert!(
        state == "trusted" || state == "uncertain",
        "scored against the profile: {c}"
    );
    // ...and the attacker's rhythm did not become hers.
    let pk = pkce();
    let r = browser_login(
        issuer,
        "rp",
        "alice",
        &[("claims", essential)],
        attacker(9),
        &pk,
        "n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("/login/totp"));
}

/// A password entry whose timings repeat an earlier login's (a capture sent again) is
/// `replayed`: it vouches for nobody (loa:0) and teaches nothing; the same typist typing
/// again is scored as usual. The replay a security review reproduced: an enrolment
/// login's own events, sent again once the profile was built from them.
#[test]
fn a_replayed_password_entry_is_not_behaviour() {
    let p = start(TWO_LOGIN_ENROLMENT);
    let issuer = p.issuer.as_str();
    let genuine = |login: u64| typist(12, 95.0, 190.0, 1, login);
    let state_of = |events: Vec<serde_json::Value>| {
        let pk = pkce();
        let r = browser_login(issuer, "rp", "bob", &[], events, &pk, "n");
        assert_eq!(r.status, 303, "{}", r.text());
        let c = behaviour_of(issuer, &r, &pk);
        (
            c["urn:habitus:behavior"]["state"]
                .as_str()
                .unwrap()
                .to_string(),
            c["acr"].as_str().unwrap().to_string(),
        )
    };
    let shifted = |events: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        events
            .into_iter()
            .map(|mut e| {
                e["t"] = serde_json::json!(e["t"].as_f64().unwrap() + 5000.0);
                e
            })
            .collect()
    };
    assert_eq!(state_of(genuine(0)).0, "learning");
    // The first enrolment login sent again, as it was and shifted by 5 s.
    for copy in [genuine(0), shifted(genuine(0))] {
        let (state, acr) = state_of(copy);
        assert_eq!(
            (state.as_str(), acr.as_str()),
            ("replayed", "urn:habitus:loa:0")
        );
    }
    // The copies taught nothing: a second genuine login is still needed to enrol.
    assert_eq!(state_of(genuine(1)).0, "learning");
    let (state, _) = state_of(genuine(2));
    assert!(
        state == "trusted" || state == "uncertain",
        "scored: {state}"
    );
    // Once enrolled, an enrolment login sent again would match the profile built from
    // it: it is caught instead.
    let (state, acr) = state_of(genuine(1));
    assert_eq!(
        (state.as_str(), acr.as_str()),
        ("replayed", "urn:habitus:loa:0")
    );
    // Typed again (the typist's own variation): not a replay.
    for login in 3..6 {
        let (state, _) = state_of(genuine(login));
        assert_ne!(state, "replayed", "login {login}");
    }
}

#[test]
fn a_login_form_posted_from_another_site_is_refused() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let pk = pkce();
    let tx = open_login(issuer, &auth_params("rp", "openid", "n", &pk));
    let login = |origin: &str| {
        http(
            "POST",
            &format!("{issuer}/login"),
            &[FORM, ("Origin", origin)],
            &form(&[("tx", &tx), ("username", "bob"), ("password", PASSWORD)]),
        )
    };
    // Login CSRF: another site's page signing the browser in as the attacker.
    for origin in ["https://evil.example", "null"] {
        let r = login(origin);
        assert_eq!(r.status, 403, "{origin}: {}", r.text());
        assert!(r.header("set-cookie").is_none(), "no session cookie");
    }
    let r = http(
        "POST",
        &format!("{issuer}/login"),
        &[FORM, ("Sec-Fetch-Site", "cross-site")],
        &form(&[("tx", &tx), ("username", "bob"), ("password", PASSWORD)]),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http(
        "POST",
        &format!("{issuer}/login/totp"),
        &[FORM, ("Origin", "https://evil.example")],
        &form(&[("tx", &tx), ("code", "123456")]),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // A post that passes every header check but comes from another browser than the one
    // that opened the login page: the attacker opened this login in their own browser
    // and makes the victim's browser post it (or the headers were forged). Refused, by
    // the cookie the login page set: none at all, or another browser's.
    let from = |cookie: Option<&str>, path: &str, fields: &[(&str, &str)]| {
        let mut hs = vec![FORM, ("Origin", issuer)];
        if let Some(c) = cookie {
            hs.push(("Cookie", c));
        }
        http_exact("POST", &format!("{issuer}{path}"), &hs, &form(fields))
    };
    let other = "habitus_oidc_browser=another-browser-0123456789abcdef";
    let password = [
        ("tx", tx.as_str()),
        ("username", "bob"),
        ("password", PASSWORD),
    ];
    for cookie in [None, Some(other), Some("habitus_oidc_browser=x")] {
        let r = from(cookie, "/login", &password);
        assert_eq!(r.status, 403, "{cookie:?}: {}", r.text());
        assert!(r.text().contains("another browser"), "{}", r.text());
        assert!(r.header("set-cookie").is_none(), "no session cookie");
        let r = from(cookie, "/login/totp", &[("tx", &tx), ("code", "123456")]);
        assert_eq!(r.status, 403, "{cookie:?}: {}", r.text());
    }
    // More refused posts than a login has attempts: none was counted.
    for _ in 0..6 {
        assert_eq!(from(Some(other), "/login", &password).status, 403);
    }
    // The refused posts changed nothing: the same transaction signs in from the issuer's
    // own page, in the browser that opened it.
    let r = login(issuer);
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.header("set-cookie").is_some());
}

/// The login page binds its transaction to the browser: a browser without the cookie
/// gets a new random one (HttpOnly, SameSite=Lax, so that it also comes with the
/// cross-site navigation from a relying party), one that has it keeps it (logins opened
/// in several tabs all stay valid).
#[test]
fn the_login_page_binds_the_login_to_the_browser() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let pk = pkce();
    let params = auth_params("rp", "openid", "n", &pk);
    let mut u = url::Url::parse(&format!("{issuer}/authorize")).expect("url");
    u.query_pairs_mut().extend_pairs(&params);
    let fresh = http_exact("GET", u.as_str(), &[], b"");
    assert_eq!(fresh.status, 200);
    let set = fresh
        .header("set-cookie")
        .expect("browser cookie")
        .to_string();
    assert!(set.starts_with("habitus_oidc_browser="), "{set}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    let value = set
        .split(';')
        .next()
        .and_then(|c| c.strip_prefix("habitus_oidc_browser="))
        .expect("value");
    assert!(
        value.len() >= 40 && !BROWSER_COOKIE.contains(value),
        "{set}"
    );
    // The fresh browser's login completes with its cookie, not with another's.
    let fresh_tx = tx_of(&fresh);
    let fresh_cookie = format!("habitus_oidc_browser={value}");
    let post = |cookie: &str| {
        http_exact(
            "POST",
            &format!("{issuer}/login"),
            &[FORM, ("Cookie", cookie)],
            &form(&[
                ("tx", &fresh_tx),
                ("username", "bob"),
                ("password", PASSWORD),
            ]),
        )
    };
    assert_eq!(post(BROWSER_COOKIE).status, 403);
    // A browser that has a cookie keeps it: two tabs, both logins valid.
    let tab1 = authorize(issuer, &params, None);
    let tab2 = authorize(issuer, &params, None);
    for tab in [&tab1, &tab2] {
        let set = tab.header("set-cookie").expect("refreshed");
        assert!(set.starts_with(&format!("{BROWSER_COOKIE};")), "{set}");
    }
    assert_eq!(
        post_login(issuer, &tx_of(&tab1), "bob", PASSWORD).status,
        303
    );
    assert_eq!(
        post_login(issuer, &tx_of(&tab2), "bob", PASSWORD).status,
        303
    );
    assert_eq!(post(&fresh_cookie).status, 303);
    // A malformed cookie of the same name before the real one (planted by a sibling
    // domain, say) does not hide it.
    let tx = tx_of(&authorize(issuer, &params, None));
    let r = http_exact(
        "POST",
        &format!("{issuer}/login"),
        &[
            FORM,
            (
                "Cookie",
                &format!("habitus_oidc_browser=x; {BROWSER_COOKIE}"),
            ),
        ],
        &form(&[("tx", &tx), ("username", "bob"), ("password", PASSWORD)]),
    );
    assert_eq!(r.status, 303, "{}", r.text());
}

/// On an https issuer (here behind a TLS-terminating proxy: the test speaks plain HTTP
/// to it) both cookies carry the `__Host-` prefix, so a sibling domain can neither plant
/// nor shadow them; cookies of the bare names are not read.
#[test]
fn an_https_issuer_sets_and_reads_host_prefixed_cookies_only() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let p = start_at("", listener, format!("https://127.0.0.1:{port}"));
    let base = format!("http://127.0.0.1:{port}");
    let pk = pkce();
    let params = auth_params("rp", "openid", "n", &pk);
    let mut u = url::Url::parse(&format!("{base}/authorize")).expect("url");
    u.query_pairs_mut().extend_pairs(&params);
    let page = http_exact("GET", u.as_str(), &[], b"");
    assert_eq!(page.status, 200, "{}", page.text());
    let set = page
        .header("set-cookie")
        .expect("browser cookie")
        .to_string();
    assert!(set.starts_with("__Host-habitus_oidc_browser="), "{set}");
    for attribute in ["Secure", "Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.to_ascii_lowercase().contains("domain="), "{set}");
    let value = set
        .split(';')
        .next()
        .and_then(|c| c.strip_prefix("__Host-habitus_oidc_browser="))
        .expect("value")
        .to_string();
    let tx = tx_of(&page);
    let login = |cookie: &str| {
        http_exact(
            "POST",
            &format!("{base}/login"),
            &[FORM, ("Cookie", cookie)],
            &form(&[("tx", &tx), ("username", "bob"), ("password", PASSWORD)]),
        )
    };
    // The same value under the bare name (what a sibling domain could set): refused.
    assert_eq!(login(&format!("habitus_oidc_browser={value}")).status, 403);
    let signed_in = login(&format!("__Host-habitus_oidc_browser={value}"));
    assert_eq!(signed_in.status, 303, "{}", signed_in.text());
    let set = signed_in.header("set-cookie").expect("session cookie");
    assert!(
        set.starts_with("__Host-habitus_oidc_session=") && set.contains("Secure"),
        "{set}"
    );
    let session = set.split(';').next().expect("cookie").to_string();
    let bare = session.trim_start_matches("__Host-").to_string();

    // The session is found under its prefixed name only.
    let again = |cookie: &str| http_exact("GET", u.as_str(), &[("Cookie", cookie)], b"");
    assert_eq!(again(&bare).status, 200, "the bare name starts a new login");
    let r = again(&session);
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.location_query().contains_key("code"), "{r:?}");
    // Signing out removes the prefixed cookie.
    let r = http_exact(
        "POST",
        &format!("{base}/end_session"),
        &[FORM, ("Cookie", &session)],
        &form(&[("confirm", "yes")]),
    );
    let cleared = r.header("set-cookie").expect("cleared");
    assert!(
        cleared.starts_with("__Host-habitus_oidc_session=;")
            && cleared.contains("Max-Age=0")
            && cleared.contains("Secure"),
        "{cleared}"
    );
    drop(p);
}

#[test]
fn after_a_wrong_password_the_new_page_collects_from_seq_0() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let pk = pkce();
    let tx = open_login(issuer, &auth_params("rp", "openid", "n", &pk));
    let batch = |seq: u64, login: u64| {
        collect(
            issuer,
            &serde_json::json!({"tx": tx, "seq": seq, "events": typist(12, 95.0, 190.0, 1, login)}),
        )
    };
    assert_eq!(batch(0, 0).status, 204);
    let wrong = post_login(issuer, &tx, "bob", "not the password");
    assert!(wrong.text().contains("Wrong user name or password"));
    // The re-rendered page runs a new collector, which numbers from 0 again.
    let r = batch(0, 1);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(batch(0, 1).status, 409, "a repeated seq is still refused");
}

/// The device cookie a sign-in reply sets, as a `Cookie` header value.
fn device_cookie_of(reply: &Reply) -> String {
    reply
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| v.strip_prefix("habitus_oidc_device="))
        .and_then(|v| v.split(';').next())
        .map(|v| format!("habitus_oidc_device={v}"))
        .unwrap_or_else(|| panic!("no device cookie: {:?}", reply.headers))
}

#[test]
fn wrong_passwords_are_throttled_per_account_across_logins() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let fresh_login = || {
        let pk = pkce();
        open_login(issuer, &auth_params("rp", "openid", "n", &pk))
    };
    let login_with = |cookie: &str, user: &str, password: &str| {
        http(
            "POST",
            &format!("{issuer}/login"),
            &[FORM, ("Cookie", cookie)],
            &form(&[
                ("tx", &fresh_login()),
                ("username", user),
                ("password", password),
            ]),
        )
    };
    let signed_in = |r: &Reply| r.status == 303;
    // The one answer to a wrong and to a throttled attempt alike.
    let refused = |r: &Reply, case: &str| {
        assert_eq!(r.status, 200, "{case}: {}", r.text());
        assert!(
            r.text().contains(
                "Wrong user name or password. After 10 failed sign-ins an account is paused for 15 minutes."
            ),
            "{case}: {}",
            r.text()
        );
    };
    // bob signed in in his own browser, twice: each sign-in gets its own browser id.
    let pk = pkce();
    let first = browser_login(issuer, "rp", "bob", &[], Vec::new(), &pk, "n");
    assert!(signed_in(&first), "{}", first.text());
    let device_cookie = device_cookie_of(&first);
    let again = browser_login(issuer, "rp", "bob", &[], Vec::new(), &pk, "n");
    assert_ne!(device_cookie_of(&again), device_cookie);

    // Ten wrong passwords over two logins (each login allows five tries), for an
    // account and for a name that is none.
    for user in ["bob", "nobody"] {
        for _ in 0..2 {
            let tx = fresh_login();
            for _ in 0..5 {
                refused(&post_login(issuer, &tx, user, "not the password"), user);
            }
        }
    }
    // A fresh login does not reset the count: even the right password is not checked,
    // and the answer is the one a wrong password gets (the pause reveals neither the
    // password nor which names are accounts).
    refused(
        &post_login(issuer, &fresh_login(), "bob", PASSWORD),
        "bob throttled",
    );
    refused(
        &post_login(issuer, &fresh_login(), "nobody", "x"),
        "no account",
    );
    // Other accounts are not affected.
    let pk = pkce();
    let alice = browser_login(issuer, "rp", "alice", &[], Vec::new(), &pk, "n");
    assert!(signed_in(&alice), "{}", alice.text());
    let alice_cookie = device_cookie_of(&alice);

    // bob's own browser is still let in: its attempts are counted per browser.
    assert!(signed_in(&login_with(&device_cookie, "bob", PASSWORD)));
    // Another user's device cookie, or an altered one, does not vouch for bob; a
    // cookie planted before the real one does not hide it.
    let altered = {
        let (head, tag) = device_cookie.rsplit_once('.').unwrap();
        let first = if tag.starts_with('A') { 'B' } else { 'A' };
        format!("{head}.{first}{}", &tag[1..])
    };
    for cookie in [
        alice_cookie.as_str(),
        altered.as_str(),
        "habitus_oidc_device=v2.Ym9i.x.AAAA",
    ] {
        refused(&login_with(cookie, "bob", PASSWORD), cookie);
    }
    let planted = format!("{}; {device_cookie}", alice_cookie);
    assert!(signed_in(&login_with(&planted, "bob", PASSWORD)));
    // The browser's own wrong passwords are limited like an account's, and only that
    // browser's: bob's other browser is still let in.
    for _ in 0..10 {
        refused(
            &login_with(&device_cookie, "bob", "not the password"),
            "own browser",
        );
    }
    refused(
        &login_with(&device_cookie, "bob", PASSWORD),
        "own browser throttled",
    );
    assert!(signed_in(&login_with(
        &device_cookie_of(&again),
        "bob",
        PASSWORD
    )));
}

/// Device cookies are honoured for 180 days from issue, by the server's own clock, and
/// only with the store's key.
#[test]
fn device_cookies_end_on_the_server_after_180_days() {
    use base64::Engine as _;
    let p = start("");
    let issuer = p.issuer.as_str();
    // The key the provider keeps in its store (read through a second connection).
    let db = habitus_oidc::store::Db::open(&p.provider.config.state_dir.join("oidc.db")).unwrap();
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &db.secret("device_cookie").unwrap(),
    );
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let cookie = |key: &ring::hmac::Key, issued: i64| {
        let id = "browserid0123456789abcdef";
        let tag = ring::hmac::sign(key, format!("device:bob\n{id}\n{issued}").as_bytes());
        format!(
            "habitus_oidc_device=v2.{}.{id}.{issued}.{}",
            b64(b"bob"),
            b64(tag.as_ref())
        )
    };
    // Pause bob's account.
    for _ in 0..2 {
        let pk = pkce();
        let tx = open_login(issuer, &auth_params("rp", "openid", "n", &pk));
        for _ in 0..5 {
            post_login(issuer, &tx, "bob", "not the password");
        }
    }
    let login_with = |cookie: &str| {
        let pk = pkce();
        let tx = open_login(issuer, &auth_params("rp", "openid", "n", &pk));
        http(
            "POST",
            &format!("{issuer}/login"),
            &[FORM, ("Cookie", cookie)],
            &form(&[("tx", &tx), ("username", "bob"), ("password", PASSWORD)]),
        )
    };
    // Ten days old: bob's browser. 181 days old, or issued in the future, or signed
    // with another key: no exemption, the account's pause applies.
    assert_eq!(login_with(&cookie(&key, now - 10 * 86_400)).status, 303);
    let other_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]);
    for (case, c) in [
        ("181 days old", cookie(&key, now - 181 * 86_400)),
        ("from the future", cookie(&key, now + 3600)),
        ("another key", cookie(&other_key, now)),
    ] {
        let r = login_with(&c);
        assert_eq!(r.status, 200, "{case}: {}", r.text());
        assert!(r.text().contains("Wrong user name or password"), "{case}");
    }
}

#[test]
fn wrong_totp_codes_are_throttled_per_user_across_logins() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let asks_code = || {
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
        assert_eq!(r.status, 200, "{}", r.text());
        tx_of(&r)
    };
    // Ten wrong codes over two logins (each login allows five tries).
    for _ in 0..2 {
        let tx = asks_code();
        for _ in 0..5 {
            let r = post_totp(issuer, &tx, "000000");
            assert!(r.text().contains("Wrong"), "{}", r.text());
        }
    }
    // A fresh login does not reset the count: even the right code is not checked now.
    let tx = asks_code();
    let r = post_totp(issuer, &tx, &totp_code(0));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Too many wrong codes"), "{}", r.text());
    // Other users are not affected.
    let pk = pkce();
    let r = browser_login(issuer, "rp", "bob", &[], Vec::new(), &pk, "n");
    assert_eq!(r.status, 303, "{}", r.text());
}

#[test]
fn another_client_presenting_a_used_code_cannot_revoke_the_session() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let pk = pkce();
    let r = browser_login(issuer, "rp", "bob", &[], Vec::new(), &pk, "n");
    assert_eq!(r.status, 303, "{}", r.text());
    let code = r.location_query()["code"].clone();
    let t = exchange(issuer, "rp", &code, &pk);
    assert_eq!(t.status, 200, "{}", t.text());
    let access = t.json()["access_token"].as_str().expect("at").to_string();
    let userinfo = || {
        http(
            "GET",
            &format!("{issuer}/userinfo"),
            &[("Authorization", &format!("Bearer {access}"))],
            b"",
        )
    };
    // rp-ed got hold of the (already redeemed) code: refused as another client's code,
    // not treated as a replay by the rightful client (which would revoke its tokens).
    let stolen = exchange(issuer, "rp-ed", &code, &pk);
    assert_eq!(stolen.status, 400);
    assert_eq!(stolen.json()["error"], "invalid_grant");
    let ui = userinfo();
    assert_eq!(ui.status, 200, "the session lives on: {}", ui.text());
    // The rightful client replaying it still revokes (RFC 6749 §4.1.2).
    let replay = exchange(issuer, "rp", &code, &pk);
    assert_eq!(replay.status, 400);
    let ui = userinfo();
    assert_eq!(ui.status, 401, "{}", ui.text());
}

#[test]
fn end_session_without_a_hint_asks_first_and_a_mismatched_client_is_refused() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let pk = pkce();
    let r = browser_login(issuer, "rp", "bob", &[], Vec::new(), &pk, "n");
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    let tokens = exchange(issuer, "rp", &r.location_query()["code"], &pk).json();
    let id_token = tokens["id_token"].as_str().expect("id_token").to_string();
    let access = tokens["access_token"].as_str().expect("at").to_string();
    let alive = || {
        http(
            "GET",
            &format!("{issuer}/userinfo"),
            &[("Authorization", &format!("Bearer {access}"))],
            b"",
        )
        .status
            == 200
    };
    let end = |method: &str, query: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut hs = vec![("Cookie", cookie.as_str())];
        hs.extend_from_slice(headers);
        http(method, &format!("{issuer}/end_session{query}"), &hs, body)
    };

    // A bare link (cookie only) shows a confirmation and ends nothing.
    let r = end("GET", "", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Sign out?"), "{}", r.text());
    assert!(alive(), "a link alone must not end the session");
    // A confirmation posted from another site confirms nothing either.
    let r = end(
        "POST",
        "",
        &[FORM, ("Origin", "https://evil.example")],
        &form(&[("confirm", "yes")]),
    );
    assert!(r.text().contains("Sign out?"), "{}", r.text());
    assert!(alive());
    // A hint for another client than the one named, or a forged hint: refused.
    let r = end(
        "GET",
        &format!("?id_token_hint={id_token}&client_id=rp-ed"),
        &[],
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = end("GET", "?id_token_hint=not.a.token", &[], b"");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(alive());
    // The user's own confirmation ends it.
    let r = end(
        "POST",
        "",
        &[FORM, ("Origin", issuer)],
        &form(&[("confirm", "yes")]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Signed out"), "{}", r.text());
    assert!(!alive(), "the confirmed sign-out ended the session");
}
