//! Authentication: every call carries `authorization: Bearer <JWT>` issued by the admin portal,
//! verified with the one configured key ([`keys`]): the portal's public key (EdDSA or RS256,
//! from a PEM file or a JWKS document; the production option) or a shared HMAC key (HS256).
//! The token's signature, algorithm (the key's, never the token's choice), expiry, `nbf`,
//! lifetime, issuer and audience are checked; its claims name the caller, their company and
//! role. The company always comes from here, never from a request field.

pub mod keys;

use std::path::PathBuf;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde::{Deserialize, Serialize};

pub use keys::{KeyError, Keys};

/// How tokens are verified: exactly one key source, and the claims they must carry.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenConfig {
    /// The admin portal's HS256 key, shared with it: at least 32 bytes, used as given (e.g. the
    /// 64 characters of `openssl rand -hex 32`). For development, or portals that cannot sign
    /// with a private key; prefer `--token-public-key-file` or `--token-jwks-file`.
    #[arg(
        long = "token-signing-key",
        env = "CCE_TOKEN_SIGNING_KEY",
        hide_env_values = true
    )]
    pub signing_key: Option<String>,
    /// A PEM file with the admin portal's public key: Ed25519 (tokens must be EdDSA) or RSA of at
    /// least 2048 bits (tokens must be RS256).
    #[arg(long = "token-public-key-file", env = "CCE_TOKEN_PUBLIC_KEY_FILE")]
    pub public_key_file: Option<PathBuf>,
    /// A file with the admin portal's JWKS document (Ed25519 and RSA signing keys); a token's
    /// `kid` picks its key. Read at start-up: restart after the portal adds a key.
    #[arg(long = "token-jwks-file", env = "CCE_TOKEN_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// The `iss` the admin portal's tokens must carry.
    #[arg(
        long = "token-issuer",
        env = "CCE_TOKEN_ISSUER",
        default_value = "admin-portal"
    )]
    pub issuer: String,
    /// The `aud` the admin portal's tokens must carry.
    #[arg(
        long = "token-audience",
        env = "CCE_TOKEN_AUDIENCE",
        default_value = "compliance-exports"
    )]
    pub audience: String,
    /// The longest a token may live, in seconds: `exp - iat`, or `exp` minus now for a token
    /// without `iat`. Longer-lived tokens are refused, so a leaked one is not good for days.
    #[arg(long = "token-max-lifetime-secs", env = "CCE_TOKEN_MAX_LIFETIME_SECS",
          default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub max_lifetime_secs: u64,
}

/// How far, in seconds, the portal's clock and ours may disagree (`exp`, `nbf`, `iat`).
const LEEWAY_SECS: u64 = 30;

/// The claims the admin portal puts in its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The admin's user id.
    pub sub: String,
    pub company_id: String,
    /// `admin` for company administrators; anything else is refused by the access rules.
    pub role: String,
    pub exp: u64,
    pub iss: String,
    pub aud: String,
    /// Where to send the admin mail about their exports (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// What the verifier reads of a token: the claims, and when it was issued (for its lifetime).
/// `nbf` is checked by the library ([`Validation::validate_nbf`]).
#[derive(Debug, Deserialize)]
struct TokenClaims {
    #[serde(flatten)]
    claims: Claims,
    #[serde(default)]
    iat: Option<u64>,
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub admin_id: String,
    pub company_id: String,
    pub is_admin: bool,
    pub email: Option<String>,
}

/// Why a token was refused. All of them are UNAUTHENTICATED, with a message that says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing `authorization: Bearer <token>` metadata")]
    Missing,
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

impl AuthError {
    pub fn into_status(self) -> tonic::Status {
        tonic::Status::unauthenticated(self.to_string())
    }
}

/// Verifies the admin portal's tokens.
#[derive(Clone)]
pub struct Verifier {
    keys: Keys,
    /// Issuer, audience, required claims, leeway; the algorithm is set per key.
    validation: Validation,
    max_lifetime_secs: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("validation", &self.validation)
            .field("max_lifetime_secs", &self.max_lifetime_secs)
            .finish()
    }
}

impl Verifier {
    /// The verifier the configuration describes, or why the service must not start with it.
    pub fn from_config(config: &TokenConfig) -> Result<Self, KeyError> {
        let keys = Keys::load(
            config.signing_key.as_deref(),
            config.public_key_file.as_deref(),
            config.jwks_file.as_deref(),
        )?;
        Ok(Self::new(
            keys,
            &config.issuer,
            &config.audience,
            config.max_lifetime_secs,
        ))
    }

    /// A verifier of HS256 tokens with `secret`, which must pass the key rules
    /// ([`keys::MIN_HMAC_KEY_BYTES`], not published), and a one-hour lifetime cap.
    pub fn hs256(secret: &str, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        Ok(Self::new(
            Keys::load(Some(secret), None, None)?,
            issuer,
            audience,
            3600,
        ))
    }

    fn new(keys: Keys, issuer: &str, audience: &str, max_lifetime_secs: u64) -> Self {
        // The algorithm placeholder is replaced by the selected key's in `verify`.
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            keys,
            validation,
            max_lifetime_secs,
        }
    }

    /// Checks the value of the `authorization` metadata.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let token = authorization
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let header = decode_header(token).map_err(|e| AuthError::Invalid(explain(&e)))?;
        let key = self
            .keys
            .select(header.kid.as_deref())
            .map_err(AuthError::Invalid)?;
        // The key decides the algorithm: a token saying HS256 is refused by a public key.
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.algorithm];
        let decoded = decode::<TokenClaims>(token, &key.key, &validation).map_err(|e| {
            AuthError::Invalid(match e.kind() {
                ErrorKind::InvalidAlgorithm => format!(
                    "it is signed with {:?}, but the configured key verifies {:?} only",
                    header.alg, key.algorithm
                ),
                _ => explain(&e),
            })
        })?;
        let TokenClaims { claims, iat } = decoded.claims;
        self.check_lifetime(claims.exp, iat)?;
        if !event_model::is_safe_id(&claims.sub) {
            return Err(AuthError::Invalid(format!(
                "sub {:?} is not a valid user id",
                claims.sub
            )));
        }
        if !event_model::is_safe_id(&claims.company_id) {
            return Err(AuthError::Invalid(format!(
                "company_id {:?} is not a valid id",
                claims.company_id
            )));
        }
        Ok(Caller {
            admin_id: claims.sub,
            company_id: claims.company_id,
            is_admin: claims.role == "admin",
            email: claims.email,
        })
    }

    /// A token may live at most `max_lifetime_secs`: from `iat` when it has one (which must not
    /// be in the future), else from now (with the clocks' leeway).
    fn check_lifetime(&self, exp: u64, iat: Option<u64>) -> Result<(), AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        let (lifetime, allowed) = match iat {
            Some(iat) if iat > now + LEEWAY_SECS => {
                return Err(AuthError::Invalid(format!(
                    "it was issued in the future (iat {iat}, now {now})"
                )));
            }
            Some(iat) => (exp.saturating_sub(iat), self.max_lifetime_secs),
            None => (
                exp.saturating_sub(now),
                self.max_lifetime_secs + LEEWAY_SECS,
            ),
        };
        if lifetime > allowed {
            return Err(AuthError::Invalid(format!(
                "it lives {lifetime} s, longer than the {} s this service accepts \
                 (CCE_TOKEN_MAX_LIFETIME_SECS): ask the admin portal for a shorter-lived token",
                self.max_lifetime_secs
            )));
        }
        Ok(())
    }

    /// Checks a gRPC request's metadata.
    pub fn verify_request<T>(&self, request: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.verify(header).map_err(AuthError::into_status)
    }
}

/// Why the library refused a token, in words an admin can act on.
fn explain(error: &jsonwebtoken::errors::Error) -> String {
    match error.kind() {
        ErrorKind::ExpiredSignature => "it has expired (exp)".into(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "its signature does not match the configured key".into(),
        ErrorKind::InvalidIssuer => "its issuer (iss) is not the configured one".into(),
        ErrorKind::InvalidAudience => "its audience (aud) is not the configured one".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::{Value, json};

    use crate::auth::keys::tests::fixture;

    const SECRET: &str = "9c1e4b7a2f5d8e0b3a6c9f2e5d8b1a4c7e0f3b6d9a2c5e8f1b4d7a0c3e6f9b2d";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(secret: &[u8], claims: &impl Serialize, algorithm: Algorithm) -> String {
        encode(
            &Header::new(algorithm),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    /// A token signed with a test-only private key from `tests/fixtures`.
    fn signed(private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
        let pem = std::fs::read(fixture(private_pem)).unwrap();
        let (key, algorithm) = if private_pem.starts_with("rsa") {
            (EncodingKey::from_rsa_pem(&pem).unwrap(), Algorithm::RS256)
        } else {
            (EncodingKey::from_ed_pem(&pem).unwrap(), Algorithm::EdDSA)
        };
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &key).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            sub: "ann".into(),
            company_id: "acme".into(),
            role: "admin".into(),
            exp: now() + 600,
            iss: "admin-portal".into(),
            aud: "compliance-exports".into(),
            email: None,
        }
    }

    /// The claims as JSON with `iat` and `nbf` (which [`Claims`] does not carry) set.
    fn timed(iat: Option<u64>, nbf: Option<u64>, exp: u64) -> Value {
        let mut value = serde_json::to_value(Claims { exp, ..claims() }).unwrap();
        if let Some(iat) = iat {
            value["iat"] = json!(iat);
        }
        if let Some(nbf) = nbf {
            value["nbf"] = json!(nbf);
        }
        value
    }

    fn hs256() -> Verifier {
        Verifier::hs256(SECRET, "admin-portal", "compliance-exports").unwrap()
    }

    fn with_file(public_key_file: Option<&str>, jwks_file: Option<&str>) -> Verifier {
        Verifier::from_config(&TokenConfig {
            signing_key: None,
            public_key_file: public_key_file.map(fixture),
            jwks_file: jwks_file.map(fixture),
            issuer: "admin-portal".into(),
            audience: "compliance-exports".into(),
            max_lifetime_secs: 3600,
        })
        .unwrap()
    }

    /// Refused, as UNAUTHENTICATED, with a message containing `why`.
    fn refused(verifier: &Verifier, token: &str, why: &str) {
        let error = verifier
            .verify(Some(&format!("Bearer {token}")))
            .expect_err(why);
        let status = error.into_status();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{why}");
        assert!(
            status.message().contains(why),
            "{why}: {}",
            status.message()
        );
    }

    fn accepted(verifier: &Verifier, token: &str) -> Caller {
        verifier.verify(Some(&format!("Bearer {token}"))).unwrap()
    }

    #[test]
    fn accepts_a_good_token_and_refuses_every_bad_one() {
        let verifier = hs256();
        let good = format!(
            "Bearer {}",
            token(SECRET.as_bytes(), &claims(), Algorithm::HS256)
        );
        let caller = verifier.verify(Some(&good)).unwrap();
        assert_eq!(
            caller,
            Caller {
                admin_id: "ann".into(),
                company_id: "acme".into(),
                is_admin: true,
                email: None,
            }
        );

        let expired = Claims {
            exp: 1_000_000_000,
            ..claims()
        };
        let wrong_audience = Claims {
            aud: "billing".into(),
            ..claims()
        };
        let wrong_issuer = Claims {
            iss: "someone-else".into(),
            ..claims()
        };
        let bad_company = Claims {
            company_id: "../other".into(),
            ..claims()
        };
        let bad_subject = Claims {
            sub: "ann\u{202e}".into(),
            ..claims()
        };
        let key = SECRET.as_bytes();
        let cases: Vec<(&str, Option<String>, &str)> = vec![
            ("no header", None, "missing"),
            (
                "not bearer",
                Some(format!("Basic {}", token(key, &claims(), Algorithm::HS256))),
                "missing",
            ),
            (
                "wrong key",
                Some(format!(
                    "Bearer {}",
                    token(&[7; 40], &claims(), Algorithm::HS256)
                )),
                "signature does not match",
            ),
            (
                "expired",
                Some(format!("Bearer {}", token(key, &expired, Algorithm::HS256))),
                "expired",
            ),
            (
                "wrong audience",
                Some(format!(
                    "Bearer {}",
                    token(key, &wrong_audience, Algorithm::HS256)
                )),
                "audience",
            ),
            (
                "wrong issuer",
                Some(format!(
                    "Bearer {}",
                    token(key, &wrong_issuer, Algorithm::HS256)
                )),
                "issuer",
            ),
            (
                "wrong algorithm",
                Some(format!(
                    "Bearer {}",
                    token(key, &claims(), Algorithm::HS512)
                )),
                "verifies HS256 only",
            ),
            ("garbage", Some("Bearer not.a.jwt".into()), "invalid"),
            (
                "unsafe company",
                Some(format!(
                    "Bearer {}",
                    token(key, &bad_company, Algorithm::HS256)
                )),
                "company_id",
            ),
            (
                "unsafe subject",
                Some(format!(
                    "Bearer {}",
                    token(key, &bad_subject, Algorithm::HS256)
                )),
                "sub",
            ),
        ];
        for (name, header, why) in cases {
            let error = verifier.verify(header.as_deref()).expect_err(name);
            assert_eq!(
                error.clone().into_status().code(),
                tonic::Code::Unauthenticated,
                "{name}"
            );
            assert!(error.to_string().contains(why), "{name}: {error}");
        }
        let member = Claims {
            role: "member".into(),
            ..claims()
        };
        let caller = accepted(&verifier, &token(key, &member, Algorithm::HS256));
        assert!(!caller.is_admin);
    }

    #[test]
    fn a_token_is_not_valid_before_its_nbf() {
        let verifier = hs256();
        let key = SECRET.as_bytes();
        let soon = timed(Some(now()), Some(now() + 300), now() + 600);
        refused(
            &verifier,
            &token(key, &soon, Algorithm::HS256),
            "not valid yet (nbf)",
        );
        // Within the clocks' leeway, and in the past, it is.
        for nbf in [now() + 10, now() - 60] {
            let ok = timed(Some(now()), Some(nbf), now() + 600);
            accepted(&verifier, &token(key, &ok, Algorithm::HS256));
        }
    }

    #[test]
    fn a_token_may_not_live_longer_than_the_cap() {
        let verifier = hs256();
        let key = SECRET.as_bytes();
        let why = "CCE_TOKEN_MAX_LIFETIME_SECS";
        // Issued an hour ago and valid for a day more: `exp - iat` is 25 hours.
        let long = timed(Some(now() - 3600), None, now() + 86_400);
        refused(&verifier, &token(key, &long, Algorithm::HS256), why);
        // Without `iat`, from now.
        let long = timed(None, None, now() + 7200);
        refused(&verifier, &token(key, &long, Algorithm::HS256), why);
        // `iat` in the future cannot make a long token look short.
        let future = timed(Some(now() + 86_000), None, now() + 86_400);
        refused(
            &verifier,
            &token(key, &future, Algorithm::HS256),
            "issued in the future",
        );
        // An hour, with or without `iat`, as `cce-admin token` makes them.
        for iat in [Some(now()), None] {
            let hour = timed(iat, None, now() + 3600);
            accepted(&verifier, &token(key, &hour, Algorithm::HS256));
        }
    }

    #[test]
    fn a_public_key_verifies_its_own_algorithm_only() {
        let good = timed(Some(now()), None, now() + 600);
        for (public, private, other) in [
            (
                "ed25519-public.pem",
                "ed25519-private.pem",
                "rsa-private.pem",
            ),
            ("rsa-public.pem", "rsa-private.pem", "ed25519-private.pem"),
        ] {
            let verifier = with_file(Some(public), None);
            assert_eq!(
                accepted(&verifier, &signed(private, None, &good)).company_id,
                "acme"
            );
            refused(
                &verifier,
                &signed(other, None, &good),
                "configured key verifies",
            );
            // Algorithm confusion: an HS256 token whose secret is the public key's own bytes.
            let public_bytes = std::fs::read(fixture(public)).unwrap();
            refused(
                &verifier,
                &token(&public_bytes, &good, Algorithm::HS256),
                "signed with HS256, but the configured key verifies",
            );
            // Every other check still applies.
            let expired = timed(Some(now() - 1200), None, now() - 600);
            refused(&verifier, &signed(private, None, &expired), "expired");
            let long = timed(None, None, now() + 7200);
            refused(
                &verifier,
                &signed(private, None, &long),
                "CCE_TOKEN_MAX_LIFETIME_SECS",
            );
        }
        // Another Ed25519 key's signature.
        let verifier = with_file(Some("ed25519-public.pem"), None);
        refused(
            &verifier,
            &signed("ed25519-other-private.pem", None, &good),
            "signature does not match",
        );
    }

    #[test]
    fn a_jwks_document_picks_the_key_by_kid_and_pins_its_algorithm() {
        let verifier = with_file(None, Some("jwks.json"));
        let good = timed(Some(now()), None, now() + 600);
        accepted(
            &verifier,
            &signed("ed25519-private.pem", Some("portal-ed-2026"), &good),
        );
        accepted(
            &verifier,
            &signed("rsa-private.pem", Some("portal-rsa-2026"), &good),
        );
        // The RSA key's kid on an EdDSA token.
        refused(
            &verifier,
            &signed("ed25519-private.pem", Some("portal-rsa-2026"), &good),
            "signed with EdDSA, but the configured key verifies RS256 only",
        );
        refused(
            &verifier,
            &signed("ed25519-other-private.pem", Some("portal-ed-2026"), &good),
            "signature does not match",
        );
        refused(
            &verifier,
            &signed("ed25519-private.pem", Some("retired"), &good),
            "no configured key has kid \"retired\"",
        );
        refused(
            &verifier,
            &signed("ed25519-private.pem", None, &good),
            "names no key",
        );
        // An HS256 token naming a public key, signed with that key's JWK text.
        let jwks = std::fs::read(fixture("jwks.json")).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("portal-ed-2026".into());
        let confused = encode(&header, &good, &EncodingKey::from_secret(&jwks)).unwrap();
        refused(&verifier, &confused, "signed with HS256");
    }

    #[tokio::test]
    async fn the_service_refuses_to_start_with_a_weak_or_published_key() {
        use clap::Parser;
        for (key, why) in [
            ("dev-only-change-me", "published example key"),
            ("0123456789abcdef", "is 16 bytes"),
        ] {
            let config = crate::Config::try_parse_from([
                "cce-export",
                "--s3-bucket",
                "unused",
                "--token-signing-key",
                key,
            ])
            .unwrap();
            // It fails before connecting to anything (nothing listens at the defaults here).
            let Err(error) = crate::start(config, telemetry::CancellationToken::new()).await else {
                panic!("{why}: the service started");
            };
            let message = format!("{error:#}");
            assert!(message.contains(why), "{message}");
            assert!(message.contains("openssl rand -hex 32"), "{message}");
        }
    }
}
