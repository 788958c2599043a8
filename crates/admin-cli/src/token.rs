//! `cce-admin token`: a token signed with the portal's key, for development and tests (in
//! production the admin portal issues tokens).
//!
//! The claims are the ones the export service reads (`export::auth::Claims`, the server's
//! side); they are written here rather than taken from the server's crate so that this tool
//! links the API's messages only. Keep the two in step.

use clap::Args;
use serde::Serialize;

/// The flags of `cce-admin token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[arg(long, env = "CCE_TOKEN_SIGNING_KEY", hide_env_values = true)]
    signing_key: String,
    #[arg(long)]
    company: String,
    #[arg(long)]
    admin: String,
    #[arg(long, default_value = "admin")]
    role: String,
    #[arg(long)]
    email: Option<String>,
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
    #[arg(long, env = "CCE_TOKEN_ISSUER", default_value = "admin-portal")]
    issuer: String,
    #[arg(long, env = "CCE_TOKEN_AUDIENCE", default_value = "compliance-exports")]
    audience: String,
}

/// The claims the admin portal puts in its tokens, as the export service reads them.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    /// The admin's user id.
    sub: &'a str,
    company_id: &'a str,
    /// `admin` for company administrators.
    role: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    iss: &'a str,
    aud: &'a str,
    /// Where to send the admin mail about their exports.
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
}

/// An HS256 token for `args`, issued at `now` (seconds since the epoch).
pub fn mint(args: &TokenArgs, now: u64) -> anyhow::Result<String> {
    let claims = Claims {
        sub: &args.admin,
        company_id: &args.company,
        role: &args.role,
        iat: now,
        nbf: now,
        exp: now + args.ttl_secs,
        iss: &args.issuer,
        aud: &args.audience,
        email: args.email.as_deref(),
    };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(args.signing_key.as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};

    use super::*;

    #[test]
    fn the_token_carries_the_claims_the_service_reads_signed_with_the_key() {
        let args = TokenArgs {
            signing_key: "a-signing-key-of-at-least-32-bytes!".into(),
            company: "acme".into(),
            admin: "ann".into(),
            role: "admin".into(),
            email: Some("ann@acme.example".into()),
            ttl_secs: 600,
            issuer: "admin-portal".into(),
            audience: "compliance-exports".into(),
        };
        let now = 1_800_000_000;
        let token = mint(&args, now).unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&["admin-portal"]);
        validation.set_audience(&["compliance-exports"]);
        validation.validate_exp = false; // `now` is in the future of the test's clock
        let key = DecodingKey::from_secret(args.signing_key.as_bytes());
        let claims = decode::<serde_json::Value>(&token, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(
            claims,
            serde_json::json!({
                "sub": "ann", "company_id": "acme", "role": "admin",
                "iat": now, "nbf": now, "exp": now + 600,
                "iss": "admin-portal", "aud": "compliance-exports",
                "email": "ann@acme.example",
            })
        );
        let other = DecodingKey::from_secret(b"another-key-of-at-least-32-bytes!!");
        assert!(decode::<serde_json::Value>(&token, &other, &validation).is_err());
    }
}
