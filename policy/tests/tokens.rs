//! Eval 3 of issue 10, as unit tests of the verifier: forged, expired, unsigned and
//! algorithm-confused tokens are refused, each with its own reason, and key rotation keeps
//! running dispatches valid until their tokens expire.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use vexa_core::WorkspaceMode;
use vexa_policy::token::{
    Actor, Confirmation, DispatchClaims, KeySet, LEEWAY, MAX_TOKEN_LIFETIME, TOKEN_TYPE,
    TokenError, Verifier, WorkspaceClaim, mint,
};

const ISS: &str = "vexa-operator";
const AUD: &str = "vexa-gateway";
const T0: u64 = 1_800_000_000;
const HOUR: Duration = Duration::from_secs(3600);

fn claims(iat: u64, lifetime: u64) -> DispatchClaims {
    DispatchClaims {
        iss: ISS.into(),
        sub: "alice".into(),
        act: Actor {
            sub: "schedule:team/nightly".into(),
        },
        aud: AUD.into(),
        workspaces: vec![WorkspaceClaim {
            name: "notes".into(),
            mode: WorkspaceMode::ReadOnly,
        }],
        tools: vec!["email-send".into(), "search".into()],
        gated_tools: vec!["email-send".into()],
        jti: "team/nightly-1".into(),
        iat,
        exp: iat + lifetime,
        cnf: Confirmation {
            spiffe_id: "spiffe://vexa.local/ns/team/dispatch/nightly-1".into(),
        },
    }
}

fn verifier(keys: &KeySet) -> Verifier {
    Verifier::new(&keys.jwks(), ISS, AUD).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact token built by hand: any header, any claims, any signature.
fn hand_built(
    header: serde_json::Value,
    claims: &DispatchClaims,
    sign: impl Fn(&[u8]) -> Vec<u8>,
) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(&serde_json::to_vec(claims).unwrap())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn private_key(keys: &KeySet) -> ed25519_dalek::SigningKey {
    let data = keys.to_secret_data().unwrap();
    let pem = std::str::from_utf8(&data[&format!("{}.pem", keys.current_kid())]).unwrap();
    ed25519_dalek::SigningKey::from_pkcs8_pem(pem).unwrap()
}

#[test]
fn a_minted_token_verifies_and_says_what_was_minted() {
    let keys = KeySet::generate(T0).unwrap();
    let c = claims(T0, 600);
    let token = mint(&keys, &c).unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        header,
        serde_json::json!({"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": keys.current_kid()})
    );
    assert_eq!(verifier(&keys).verify(&token, T0 + 10).unwrap(), c);
}

#[test]
fn a_token_signed_by_another_key_set_is_refused() {
    let ours = KeySet::generate(T0).unwrap();
    let theirs = KeySet::generate(T0).unwrap();
    let token = mint(&theirs, &claims(T0, 600)).unwrap();
    assert_eq!(
        verifier(&ours).verify(&token, T0),
        Err(TokenError::UnknownKid(theirs.current_kid().into()))
    );
    // Another key that claims to be ours.
    let forged = hand_built(
        serde_json::json!({"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": ours.current_kid()}),
        &claims(T0, 600),
        |input| private_key(&theirs).sign(input).to_bytes().to_vec(),
    );
    assert_eq!(
        verifier(&ours).verify(&forged, T0),
        Err(TokenError::BadSignature(ours.current_kid().into()))
    );
}

#[test]
fn an_expired_token_is_refused_after_the_stated_leeway() {
    let keys = KeySet::generate(T0).unwrap();
    let c = claims(T0, 600);
    let token = mint(&keys, &c).unwrap();
    let v = verifier(&keys);
    let leeway = LEEWAY.as_secs();
    v.verify(&token, c.exp + leeway - 1).unwrap();
    let err = v.verify(&token, c.exp + leeway).unwrap_err();
    assert_eq!(
        err,
        TokenError::Expired {
            exp: c.exp,
            now: c.exp + leeway,
            leeway
        }
    );
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn an_unsigned_token_is_refused() {
    let keys = KeySet::generate(T0).unwrap();
    for alg in ["none", "None", "NONE"] {
        let token = hand_built(
            serde_json::json!({"alg": alg, "typ": TOKEN_TYPE, "kid": keys.current_kid()}),
            &claims(T0, 600),
            |_| vec![],
        );
        assert!(token.ends_with('.'));
        assert_eq!(
            verifier(&keys).verify(&token, T0),
            Err(TokenError::AlgNone),
            "{alg}"
        );
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let keys = KeySet::generate(T0).unwrap();
    let jwk = keys.jwks().keys.remove(0);
    let public_raw = URL_SAFE_NO_PAD.decode(&jwk.x).unwrap();
    // Every form of the public key an algorithm-confused verifier might use as the secret.
    let secrets = [
        public_raw,
        jwk.x.as_bytes().to_vec(),
        serde_json::to_vec(&jwk).unwrap(),
    ];
    for secret in secrets {
        let token = hand_built(
            serde_json::json!({"alg": "HS256", "typ": TOKEN_TYPE, "kid": keys.current_kid()}),
            &claims(T0, 600),
            |input| {
                let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
                mac.update(input);
                mac.finalize().into_bytes().to_vec()
            },
        );
        let err = verifier(&keys).verify(&token, T0).unwrap_err();
        assert_eq!(err, TokenError::AlgorithmNotAllowed("HS256".into()));
        assert!(err.to_string().contains("EdDSA only"), "{err}");
    }
}

#[test]
fn other_asymmetric_algorithms_are_refused() {
    let keys = KeySet::generate(T0).unwrap();
    for alg in ["RS256", "ES256", "PS256", "ES384", "Ed25519"] {
        let token = hand_built(
            serde_json::json!({"alg": alg, "typ": TOKEN_TYPE, "kid": keys.current_kid()}),
            &claims(T0, 600),
            |input| private_key(&keys).sign(input).to_bytes().to_vec(),
        );
        assert_eq!(
            verifier(&keys).verify(&token, T0),
            Err(TokenError::AlgorithmNotAllowed(alg.into()))
        );
    }
}

#[test]
fn a_payload_edited_after_signing_is_refused() {
    let keys = KeySet::generate(T0).unwrap();
    let token = mint(&keys, &claims(T0, 600)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut wider = claims(T0, 600);
    wider.workspaces[0].mode = WorkspaceMode::ReadWrite;
    wider.gated_tools.clear();
    let edited = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_vec(&wider).unwrap()),
        parts[2]
    );
    assert_eq!(
        verifier(&keys).verify(&edited, T0),
        Err(TokenError::BadSignature(keys.current_kid().into()))
    );
}

#[test]
fn an_unknown_or_missing_kid_is_refused() {
    let keys = KeySet::generate(T0).unwrap();
    let sign = |input: &[u8]| private_key(&keys).sign(input).to_bytes().to_vec();
    let unknown = hand_built(
        serde_json::json!({"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": "not-a-key"}),
        &claims(T0, 600),
        sign,
    );
    assert_eq!(
        verifier(&keys).verify(&unknown, T0),
        Err(TokenError::UnknownKid("not-a-key".into()))
    );
    let missing = hand_built(
        serde_json::json!({"alg": "EdDSA", "typ": TOKEN_TYPE}),
        &claims(T0, 600),
        sign,
    );
    assert_eq!(
        verifier(&keys).verify(&missing, T0),
        Err(TokenError::MissingKid)
    );
}

#[test]
fn a_token_of_another_type_or_with_critical_extensions_is_refused() {
    let keys = KeySet::generate(T0).unwrap();
    let sign = |input: &[u8]| private_key(&keys).sign(input).to_bytes().to_vec();
    let kid = keys.current_kid();
    let plain_jwt = hand_built(
        serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
        &claims(T0, 600),
        sign,
    );
    assert_eq!(
        verifier(&keys).verify(&plain_jwt, T0),
        Err(TokenError::WrongType(Some("JWT".into())))
    );
    let crit = hand_built(
        serde_json::json!({"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": kid, "crit": ["b64"], "b64": false}),
        &claims(T0, 600),
        sign,
    );
    assert!(matches!(
        verifier(&keys).verify(&crit, T0),
        Err(TokenError::Malformed(m)) if m.contains("crit")
    ));
}

#[test]
fn wrong_issuer_audience_and_times_are_refused_each_with_its_reason() {
    let keys = KeySet::generate(T0).unwrap();
    let v = verifier(&keys);
    let refused = |c: DispatchClaims, now: u64| {
        v.verify(&mint(&keys, &c).unwrap(), now)
            .unwrap_err()
            .reason()
    };
    let mut c = claims(T0, 600);
    c.iss = "someone-else".into();
    assert_eq!(refused(c, T0), "WrongIssuer");
    let mut c = claims(T0, 600);
    c.aud = "another-gateway".into();
    assert_eq!(refused(c, T0), "WrongAudience");
    assert_eq!(refused(claims(T0 + 600, 600), T0), "IssuedInFuture");
    v.verify(
        &mint(&keys, &claims(T0 + LEEWAY.as_secs(), 600)).unwrap(),
        T0,
    )
    .unwrap();
    assert_eq!(
        refused(claims(T0, MAX_TOKEN_LIFETIME.as_secs() + 1), T0),
        "TokenLifetimeTooLong"
    );
    v.verify(
        &mint(&keys, &claims(T0, MAX_TOKEN_LIFETIME.as_secs())).unwrap(),
        T0,
    )
    .unwrap();
    assert_eq!(refused(claims(T0, 0), T0), "ExpiresBeforeIssued");
    let short = verifier(&keys).with_max_lifetime(Duration::from_secs(300));
    assert_eq!(
        short.verify(&mint(&keys, &claims(T0, 600)).unwrap(), T0),
        Err(TokenError::LifetimeTooLong {
            lifetime: 600,
            max: 300
        })
    );
}

#[test]
fn garbage_is_refused_as_malformed() {
    let keys = KeySet::generate(T0).unwrap();
    for token in ["", "a.b", "a.b.c.d", "!!!.e30.", "e30.e30.AA"] {
        assert!(
            matches!(
                verifier(&keys).verify(token, T0),
                Err(TokenError::Malformed(_))
            ),
            "{token:?}"
        );
    }
}

#[test]
fn rotation_keeps_running_dispatches_valid_until_their_tokens_expire() {
    let mut keys = KeySet::generate(T0).unwrap();
    let old_kid = keys.current_kid().to_string();
    let c = claims(T0 + 3000, 600);
    let running = mint(&keys, &c).unwrap();

    // The rotation period passes: a new key signs, the old one stays published.
    let rotated_at = T0 + 3600;
    assert!(keys.rotate(rotated_at, HOUR, MAX_TOKEN_LIFETIME).unwrap());
    assert_ne!(keys.current_kid(), old_kid);
    let jwks = keys.jwks();
    assert!(jwks.find(&old_kid).is_some());
    verifier(&keys).verify(&running, c.exp - 1).unwrap();
    let fresh = mint(&keys, &claims(rotated_at, 600)).unwrap();
    verifier(&keys).verify(&fresh, rotated_at).unwrap();

    // Past retire_at the old key is gone: its tokens are refused for that reason too.
    let retire_at = rotated_at + MAX_TOKEN_LIFETIME.as_secs() + LEEWAY.as_secs();
    assert!(
        !keys
            .rotate(retire_at - 1, HOUR * 24, MAX_TOKEN_LIFETIME)
            .unwrap()
    );
    assert!(keys.jwks().find(&old_kid).is_some());
    assert!(
        keys.rotate(retire_at, HOUR * 24, MAX_TOKEN_LIFETIME)
            .unwrap()
    );
    assert!(keys.jwks().find(&old_kid).is_none());
    assert_eq!(
        verifier(&keys).verify(&running, c.iat + 1),
        Err(TokenError::UnknownKid(old_kid))
    );
    verifier(&keys).verify(&fresh, rotated_at + 1).unwrap();

    // The key set survives a trip through its Secret with the same keys.
    let back = KeySet::from_secret_data(&keys.to_secret_data().unwrap()).unwrap();
    verifier(&back).verify(&fresh, rotated_at + 1).unwrap();
}
