//! Why a key set could not be used or a token was refused.

use super::{TOKEN_TYPE, UnixTime};

/// What went wrong with keys, minting or verification. Each refusal of a token has its own
/// variant, so the gateway and the audit log can say exactly why; [`TokenError::reason`] is the
/// short bounded form for metric labels and events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The operating system gave no randomness for a new key.
    #[error("could not get randomness for a new signing key: {0}")]
    Random(String),
    /// The Secret holding the signing keys cannot be read back.
    #[error("the signing key Secret is unusable: {0} (delete it to start a new key set)")]
    KeySecret(String),
    /// A key in a JWKS is not an Ed25519 signing key.
    #[error("key {kid:?} in the key set is unusable: {problem}")]
    BadJwk {
        /// The key's id.
        kid: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Signing failed.
    #[error("could not sign: {0}")]
    Sign(String),
    /// Not three base64url parts with a JSON header.
    #[error("not a JWT: {0}")]
    Malformed(String),
    /// `alg: none`: an unsigned token.
    #[error("unsigned token (alg 'none') refused: dispatch tokens are signed with EdDSA")]
    AlgNone,
    /// Signed with another algorithm than EdDSA (HS256, RS256, ES256, …).
    #[error("algorithm {0:?} refused: dispatch tokens are signed with EdDSA only")]
    AlgorithmNotAllowed(String),
    /// Not a dispatch token (another `typ`).
    #[error("token type {0:?} refused: a dispatch token has typ {TOKEN_TYPE:?}")]
    WrongType(Option<String>),
    /// No `kid` in the header.
    #[error("the token names no key (no kid in its header)")]
    MissingKid,
    /// A `kid` the key set does not have.
    #[error(
        "no key {0:?} in the key set: the token was signed by another issuer, or with a key \
         retired since"
    )]
    UnknownKid(String),
    /// The signature does not match the signing input (forged, or edited after signing).
    #[error("bad signature: the token was not signed by key {0:?} or was changed after signing")]
    BadSignature(String),
    /// The payload is not the dispatch claims.
    #[error("the token's claims are not dispatch claims: {0}")]
    MalformedClaims(String),
    /// Minted by someone else.
    #[error("issuer {got:?} refused: expected {want:?}")]
    WrongIssuer {
        /// The token's `iss`.
        got: String,
        /// The verifier's issuer.
        want: String,
    },
    /// Meant for someone else.
    #[error("audience {got:?} refused: expected {want:?}")]
    WrongAudience {
        /// The token's `aud`.
        got: String,
        /// The verifier's audience.
        want: String,
    },
    /// Past its `exp` (beyond the leeway).
    #[error("token expired at {exp} (now {now}, leeway {leeway} s)")]
    Expired {
        /// The token's `exp`.
        exp: UnixTime,
        /// The verifier's time.
        now: UnixTime,
        /// Seconds of clock skew tolerated.
        leeway: u64,
    },
    /// Its `iat` is later than now (beyond the leeway).
    #[error("token issued in the future at {iat} (now {now}, leeway {leeway} s)")]
    IssuedInFuture {
        /// The token's `iat`.
        iat: UnixTime,
        /// The verifier's time.
        now: UnixTime,
        /// Seconds of clock skew tolerated.
        leeway: u64,
    },
    /// `exp` is not after `iat`.
    #[error("token expires ({exp}) before it is issued ({iat})")]
    ExpiresBeforeIssued {
        /// The token's `iat`.
        iat: UnixTime,
        /// The token's `exp`.
        exp: UnixTime,
    },
    /// `exp - iat` is longer than any dispatch token may live.
    #[error("token lifetime {lifetime} s refused: at most {max} s")]
    LifetimeTooLong {
        /// `exp - iat`.
        lifetime: u64,
        /// The verifier's maximum.
        max: u64,
    },
}

impl TokenError {
    /// Short CamelCase reason, bounded, for metric labels, events and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Random(_) => "NoRandomness",
            Self::KeySecret(_) => "KeySecretUnusable",
            Self::BadJwk { .. } => "BadJwk",
            Self::Sign(_) => "SignFailed",
            Self::Malformed(_) => "TokenMalformed",
            Self::AlgNone => "AlgNone",
            Self::AlgorithmNotAllowed(_) => "AlgorithmNotAllowed",
            Self::WrongType(_) => "WrongTokenType",
            Self::MissingKid => "MissingKid",
            Self::UnknownKid(_) => "UnknownKid",
            Self::BadSignature(_) => "BadSignature",
            Self::MalformedClaims(_) => "ClaimsMalformed",
            Self::WrongIssuer { .. } => "WrongIssuer",
            Self::WrongAudience { .. } => "WrongAudience",
            Self::Expired { .. } => "TokenExpired",
            Self::IssuedInFuture { .. } => "IssuedInFuture",
            Self::ExpiresBeforeIssued { .. } => "ExpiresBeforeIssued",
            Self::LifetimeTooLong { .. } => "TokenLifetimeTooLong",
        }
    }
}
