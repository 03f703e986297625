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
/// Shortest JWT secret accepted, in bytes: HS256's own key size (RFC 7518, section 3.2).
pub const MIN_JWT_SECRET_BYTES: usize = 32;
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
    #[error(
        "the JWT secret in {origin} is {len} bytes; HS256 needs at least {MIN_JWT_SECRET_BYTES} \
         (e.g. `openssl rand -base64 32`)"
    )]
    ShortJwtSecret { origin: String, len: usize },
}

/// The JWT secret: from `--jwt-secret-file`, else `CHAT_JWT_SECRET`.
pub fn jwt_secret(settings: &AuthSettings) -> Result<Vec<u8>, SecretError> {
    let secret = secret(settings.jwt_secret_file.as_deref(), JWT_SECRET_ENV)?
        .ok_or(SecretError::NoJwtSecret)?;
    if secret.len() < MIN_JWT_SECRET_BYTES {
        return Err(SecretError::ShortJwtSecret {
            origin: settings.jwt_secret_file.as_ref().map_or_else(
                || JWT_SECRET_ENV.to_owned(),
                |path| path.display().to_string(),
            ),
            len: secret.len(),
        });
    }
    Ok(secret)
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

/// Why a handshake was refused; the message reaches the client as its `connect_error`, so each
/// says in words what is wrong with the token (never a library's error).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send auth {{token}} or the {0} cookie")]
    Missing(String),
    #[error("invalid token: it has expired")]
    Expired,
    #[error("invalid token: it is not valid yet (its nbf is in the future)")]
    NotYetValid,
    #[error("invalid token: its signature does not match")]
    BadSignature,
    #[error("invalid token: {0}")]
    Malformed(&'static str),
    #[error("invalid token: it has no {0:?} claim")]
    MissingClaim(String),
    #[error("invalid token: it is not for this service (its aud does not match)")]
    WrongAudience,
    #[error("invalid token: it was not issued by the expected issuer (its iss does not match)")]
    WrongIssuer,
    #[error("invalid token: its subject is not a valid user id")]
    BadSubject,
}

impl AuthError {
    /// The sentence for what the JWT library found wrong.
    fn from_kind(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) => Self::MissingClaim(claim.clone()),
            ErrorKind::InvalidToken => {
                Self::Malformed("it is not a JWT (three base64url parts separated by dots)")
            }
            ErrorKind::Base64(_) => Self::Malformed("a part of it is not valid base64url"),
            ErrorKind::Utf8(_) => Self::Malformed("its header or claims are not UTF-8 text"),
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => Self::Malformed(
                "its header or claims are not the expected JSON (exp a number, sub a string)",
            ),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                Self::Malformed("it must be signed with HS256")
            }
            _ => Self::Malformed("it cannot be verified"),
        }
    }
}

/// The handshake's auth payload: `{token}`.
#[derive(Debug, Default, Deserialize)]
pub struct HandshakeAuth {
    #[serde(default)]
    pub token: Option<String>,
    /// socket.io connection state recovery: the private session id the client had.
    #[serde(default)]
    pub pid: Option<String>,
    /// socket.io connection state recovery: the offset of the last room event it got.
    #[serde(default)]
    pub offset: Option<String>,
}

/// The claims read from a token. Both are required (the validation refuses a token without
/// them, with a reason that names the claim); optional here so that a missing one is reported
/// as missing, not as a JSON shape error.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    /// Unix seconds (a JWT NumericDate may have a fraction).
    exp: Option<f64>,
}

/// What a valid token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub user: UserId,
    /// When the token stops being accepted: its `exp` plus the leeway, in unix seconds. A
    /// socket is disconnected then.
    pub expires_at: u64,
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
            AuthMode::Jwt => Ok(Self::Jwt {
                key: DecodingKey::from_secret(&jwt_secret(settings)?),
                validation: Box::new(validation(settings)),
                cookie: settings.auth_cookie.clone(),
            }),
        }
    }

    /// What a handshake proves: `Ok(None)` in open mode, the token's subject and expiry in jwt
    /// mode, or the reason for refusing the socket.
    pub fn authenticate(
        &self,
        auth: Option<&HandshakeAuth>,
        cookie_header: Option<&str>,
        limits: &Limits,
    ) -> Result<Option<Proof>, AuthError> {
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
            .map_err(|err| AuthError::from_kind(err.kind()))?
            .claims;
        let sub = claims
            .sub
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        let exp = claims
            .exp
            .ok_or_else(|| AuthError::MissingClaim("exp".into()))?;
        let user = UserId::parse(&sub, limits).map_err(|_| AuthError::BadSubject)?;
        Ok(Some(Proof {
            user,
            expires_at: (exp.max(0.0) as u64).saturating_add(validation.leeway),
        }))
    }
}

/// What a token must satisfy: HS256, `exp` and `sub`, `nbf` if present, `aud` and `iss` when
/// configured; the leeway applies to `exp` and `nbf`.
fn validation(settings: &AuthSettings) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = settings.jwt_leeway_secs;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    match &settings.jwt_audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        // Without a configured audience, a token's `aud` is not ours to judge.
        None => validation.validate_aud = false,
    }
    if let Some(issuer) = &settings.jwt_issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Disconnects socket `sid` when its token stops being accepted, unless the watch is dropped
/// first (it is kept with the socket, so a socket that ends earlier stops its watch).
#[derive(Debug)]
pub struct ExpiryWatch(tokio::task::AbortHandle);

impl ExpiryWatch {
    pub fn start(
        io: socketioxide::SocketIo,
        sid: socketioxide::socket::Sid,
        expires_at: u64,
    ) -> Self {
        let task = tokio::spawn(async move {
            let now = crate::unix_millis();
            let at_ms = expires_at.saturating_mul(1000);
            tokio::time::sleep(std::time::Duration::from_millis(at_ms.saturating_sub(now))).await;
            if let Some(socket) = io.get_socket(sid) {
                crate::edge::counters::count(crate::edge::counters::Refusal::TokenExpired);
                tracing::debug!(%sid, "token expired: disconnecting");
                let _ = socket.emit(
                    chat_protocol::people::LOGOUT_EVENT,
                    &chat_protocol::server::SessionEnd::TOKEN_EXPIRED,
                );
                let _ = socket.disconnect();
            }
        });
        Self(task.abort_handle())
    }
}

impl Drop for ExpiryWatch {
    fn drop(&mut self) {
        self.0.abort();
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

    fn settings(audience: Option<&str>, issuer: Option<&str>) -> AuthSettings {
        AuthSettings {
            auth: AuthMode::Jwt,
            jwt_secret_file: None,
            auth_cookie: "chat_token".into(),
            jwt_leeway_secs: 0,
            api_key_file: None,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            jwt_audience: audience.map(str::to_owned),
            jwt_issuer: issuer.map(str::to_owned),
        }
    }

    fn jwt_with(secret: &[u8], settings: &AuthSettings) -> Authenticator {
        Authenticator::Jwt {
            key: DecodingKey::from_secret(secret),
            validation: Box::new(validation(settings)),
            cookie: "chat_token".into(),
        }
    }

    fn jwt(secret: &[u8]) -> Authenticator {
        jwt_with(secret, &settings(None, None))
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn signed(secret: &[u8], claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn token(secret: &[u8], sub: &str, exp_offset: i64) -> String {
        signed(
            secret,
            serde_json::json!({"sub": sub, "exp": now() + exp_offset}),
        )
    }

    fn check(
        auth: &Authenticator,
        token: Option<String>,
        cookie: Option<&str>,
    ) -> Result<Option<String>, AuthError> {
        let handshake = HandshakeAuth {
            token,
            ..HandshakeAuth::default()
        };
        auth.authenticate(Some(&handshake), cookie, &Limits::default())
            .map(|proof| proof.map(|p| p.user.as_str().to_owned()))
    }

    #[test]
    fn refusals_are_sentences_not_library_errors() {
        let auth = jwt(b"s3cret");
        for garbage in ["garbage", "a.b", "x.y.z", "eyJhbGciOiJIUzI1NiJ9.e30.!"] {
            let reason = check(&auth, Some(garbage.into()), None)
                .unwrap_err()
                .to_string();
            assert!(reason.starts_with("invalid token: "), "{reason}");
            for rust in ["InvalidToken", "Base64", "InvalidLength", "Json(", "Error("] {
                assert!(!reason.contains(rust), "{garbage}: {reason} speaks Rust");
            }
        }
        let soon = signed(
            b"s3cret",
            serde_json::json!({"sub": "ann", "exp": now() + 60, "nbf": now() + 30}),
        );
        assert_eq!(check(&auth, Some(soon), None), Err(AuthError::NotYetValid));
        let no_exp = signed(b"s3cret", serde_json::json!({"sub": "ann"}));
        assert_eq!(
            check(&auth, Some(no_exp), None).unwrap_err().to_string(),
            "invalid token: it has no \"exp\" claim"
        );
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let claims = |aud: &str, iss: &str| {
            signed(
                b"s3cret",
                serde_json::json!({"sub": "ann", "exp": now() + 60, "aud": aud, "iss": iss}),
            )
        };
        // Not configured: any aud and iss pass.
        assert!(check(&jwt(b"s3cret"), Some(claims("other", "anyone")), None).is_ok());
        let strict = jwt_with(
            b"s3cret",
            &settings(Some("chat"), Some("https://id.example")),
        );
        assert!(check(&strict, Some(claims("chat", "https://id.example")), None).is_ok());
        assert_eq!(
            check(&strict, Some(claims("billing", "https://id.example")), None),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            check(&strict, Some(claims("chat", "https://evil.example")), None),
            Err(AuthError::WrongIssuer)
        );
        assert!(matches!(
            check(&strict, Some(token(b"s3cret", "ann", 60)), None),
            Err(AuthError::MissingClaim(_))
        ));
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
