//! Authentication: every call carries `authorization: Bearer <JWT>` signed by the admin portal
//! (HS256 with a shared key). The token's signature, expiry, issuer and audience are checked;
//! its claims name the caller, their company and role. The company always comes from here,
//! never from a request field.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::{Deserialize, Serialize};

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
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("validation", &self.validation)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
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
        let claims = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
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

    /// Checks a gRPC request's metadata.
    pub fn verify_request<T>(&self, request: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.verify(header).map_err(AuthError::into_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &[u8] = b"portal-signing-key-for-tests-only";

    fn token(secret: &[u8], claims: &Claims, algorithm: Algorithm) -> String {
        encode(
            &Header::new(algorithm),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn claims() -> Claims {
        Claims {
            sub: "ann".into(),
            company_id: "acme".into(),
            role: "admin".into(),
            exp: u64::try_from(chrono::Utc::now().timestamp()).unwrap() + 600,
            iss: "admin-portal".into(),
            aud: "compliance-exports".into(),
            email: None,
        }
    }

    #[test]
    fn accepts_a_good_token_and_refuses_every_bad_one() {
        let verifier = Verifier::hs256(SECRET, "admin-portal", "compliance-exports");
        let good = format!("Bearer {}", token(SECRET, &claims(), Algorithm::HS256));
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
        let cases: Vec<(&str, Option<String>)> = vec![
            ("no header", None),
            (
                "not bearer",
                Some(format!(
                    "Basic {}",
                    token(SECRET, &claims(), Algorithm::HS256)
                )),
            ),
            (
                "forged signature",
                Some(format!(
                    "Bearer {}",
                    token(b"another key", &claims(), Algorithm::HS256)
                )),
            ),
            (
                "expired",
                Some(format!(
                    "Bearer {}",
                    token(SECRET, &expired, Algorithm::HS256)
                )),
            ),
            (
                "wrong audience",
                Some(format!(
                    "Bearer {}",
                    token(SECRET, &wrong_audience, Algorithm::HS256)
                )),
            ),
            (
                "wrong issuer",
                Some(format!(
                    "Bearer {}",
                    token(SECRET, &wrong_issuer, Algorithm::HS256)
                )),
            ),
            (
                "other algorithm",
                Some(format!(
                    "Bearer {}",
                    token(SECRET, &claims(), Algorithm::HS512)
                )),
            ),
            ("garbage", Some("Bearer not.a.jwt".into())),
            (
                "unsafe company",
                Some(format!(
                    "Bearer {}",
                    token(SECRET, &bad_company, Algorithm::HS256)
                )),
            ),
            (
                "unsafe subject",
                Some(format!(
                    "Bearer {}",
                    token(SECRET, &bad_subject, Algorithm::HS256)
                )),
            ),
        ];
        for (name, header) in cases {
            let error = verifier.verify(header.as_deref()).expect_err(name);
            assert_eq!(
                error.clone().into_status().code(),
                tonic::Code::Unauthenticated,
                "{name}"
            );
            assert!(!error.to_string().is_empty());
        }
        let member = Claims {
            role: "member".into(),
            ..claims()
        };
        let caller = verifier
            .verify(Some(&format!(
                "Bearer {}",
                token(SECRET, &member, Algorithm::HS256)
            )))
            .unwrap();
        assert!(!caller.is_admin);
    }
}
