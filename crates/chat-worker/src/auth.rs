//! Authentication: who a socket is (`--auth jwt`: an HS256 token in the handshake), and whether an
//! HTTP API caller holds the API key. Secrets come from the environment or a file and are never
//! logged: errors name where a secret was looked for, not what it was.

use std::{fs, path::Path};

use chat_protocol::{Limits, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::{AuthMode, AuthSettings};

pub const JWT_SECRET_ENV: &str = "CHAT_JWT_SECRET";
pub const API_KEY_ENV: &str = "CHAT_API_KEY";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("--auth jwt needs a secret: set {JWT_SECRET_ENV} or --jwt-secret-file")]
    NoJwtSecret,
    #[error("could not read the secret file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret in {0} is empty")]
    Empty(String),
}

/// The JWT secret: from `--jwt-secret-file`, else `CHAT_JWT_SECRET`.
pub fn jwt_secret(settings: &AuthSettings) -> Result<Vec<u8>, SecretError> {
    secret(settings.jwt_secret_file.as_deref(), JWT_SECRET_ENV)?.ok_or(SecretError::NoJwtSecret)
}

/// The API key: from `--api-key-file`, else `CHAT_API_KEY`; `None` when neither is set.
pub fn api_key(settings: &AuthSettings) -> Result<Option<Vec<u8>>, SecretError> {
    secret(settings.api_key_file.as_deref(), API_KEY_ENV)
}

fn secret(file: Option<&Path>, env: &str) -> Result<Option<Vec<u8>>, SecretError> {
    let (value, source) = match file {
        Some(path) => {
            let text = fs::read_to_string(path).map_err(|source| SecretError::File {
                path: path.display().to_string(),
                source,
            })?;
            (text, path.display().to_string())
        }
        None => match std::env::var(env) {
            Ok(value) => (value, env.to_owned()),
            Err(_) => return Ok(None),
        },
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(SecretError::Empty(source));
    }
    Ok(Some(trimmed.as_bytes().to_vec()))
}

/// Why a handshake was refused; the message reaches the client as its `connect_error`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send auth {{token}} or the {0} cookie")]
    Missing(String),
    #[error("invalid token: it has expired")]
    Expired,
    #[error("invalid token: its signature does not match")]
    BadSignature,
    #[error("invalid token: {0}")]
    Malformed(String),
    #[error("invalid token: its subject is not a valid user id")]
    BadSubject,
}

/// The handshake's auth payload: `{token}`.
#[derive(Debug, Default, Deserialize)]
pub struct HandshakeAuth {
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

/// Decides who a connecting socket is.
pub enum Authenticator {
    /// `--auth none`: no identity at the handshake; `login` names the user.
    Open,
    Jwt {
        key: DecodingKey,
        validation: Box<Validation>,
        cookie: String,
    },
}

impl Authenticator {
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, SecretError> {
        match settings.auth {
            AuthMode::None => Ok(Self::Open),
            AuthMode::Jwt => {
                let mut validation = Validation::new(Algorithm::HS256);
                validation.leeway = settings.jwt_leeway_secs;
                validation.set_required_spec_claims(&["exp", "sub"]);
                Ok(Self::Jwt {
                    key: DecodingKey::from_secret(&jwt_secret(settings)?),
                    validation: Box::new(validation),
                    cookie: settings.auth_cookie.clone(),
                })
            }
        }
    }

    /// The identity a handshake proves: `Ok(None)` in open mode, the token's subject in jwt
    /// mode, or the reason for refusing the socket.
    pub fn authenticate(
        &self,
        auth: Option<&HandshakeAuth>,
        cookie_header: Option<&str>,
        limits: &Limits,
    ) -> Result<Option<UserId>, AuthError> {
        let Self::Jwt {
            key,
            validation,
            cookie,
        } = self
        else {
            return Ok(None);
        };
        let token = auth
            .and_then(|auth| auth.token.as_deref())
            .filter(|token| !token.is_empty())
            .or_else(|| cookie_header.and_then(|header| cookie_value(header, cookie)))
            .ok_or_else(|| AuthError::Missing(cookie.clone()))?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                other => AuthError::Malformed(format!("{other:?}")),
            })?
            .claims;
        UserId::parse(&claims.sub, limits)
            .map(Some)
            .map_err(|_| AuthError::BadSubject)
    }
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// Whether an `Authorization` header carries the API key as a bearer token, compared in
/// constant time.
pub fn bearer_matches(header: Option<&str>, key: &[u8]) -> bool {
    header
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn jwt(secret: &[u8]) -> Authenticator {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Authenticator::Jwt {
            key: DecodingKey::from_secret(secret),
            validation: Box::new(validation),
            cookie: "chat_token".into(),
        }
    }

    fn token(secret: &[u8], sub: &str, exp_offset: i64) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + exp_offset;
        let claims = serde_json::json!({"sub": sub, "exp": exp});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn check(
        auth: &Authenticator,
        token: Option<String>,
        cookie: Option<&str>,
    ) -> Result<Option<String>, AuthError> {
        let handshake = HandshakeAuth { token };
        auth.authenticate(Some(&handshake), cookie, &Limits::default())
            .map(|user| user.map(|u| u.as_str().to_owned()))
    }

    #[test]
    fn tokens_are_checked() {
        let auth = jwt(b"s3cret");
        assert_eq!(
            check(&auth, Some(token(b"s3cret", "ann", 60)), None),
            Ok(Some("ann".into()))
        );
        assert_eq!(
            check(&auth, None, None),
            Err(AuthError::Missing("chat_token".into()))
        );
        assert_eq!(
            check(&auth, Some(token(b"other", "ann", 60)), None),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check(&auth, Some(token(b"s3cret", "ann", -60)), None),
            Err(AuthError::Expired)
        );
        assert_eq!(
            check(&auth, Some(token(b"s3cret", "a b", 60)), None),
            Err(AuthError::BadSubject)
        );
        assert!(matches!(
            check(&auth, Some("garbage".into()), None),
            Err(AuthError::Malformed(_))
        ));
        let cookie = format!("theme=dark; chat_token={}", token(b"s3cret", "bob", 60));
        assert_eq!(check(&auth, None, Some(&cookie)), Ok(Some("bob".into())));
        assert_eq!(check(&Authenticator::Open, None, None), Ok(None));
    }

    #[test]
    fn bearer_keys() {
        assert!(bearer_matches(Some("Bearer k1"), b"k1"));
        assert!(!bearer_matches(Some("Bearer k2"), b"k1"));
        assert!(!bearer_matches(Some("k1"), b"k1"));
        assert!(!bearer_matches(None, b"k1"));
    }
}
