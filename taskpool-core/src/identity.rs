//! Who is asking: a JWT (HS256 or RS256; `sub`, `groups`) or, behind a trusted gateway,
//! the `X-User` and `X-Groups` headers. The engines' identity (`IdentitySynced`) adds groups.

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::view::{Principals, View};

pub const USER_HEADER: &str = "x-user";
pub const GROUPS_HEADER: &str = "x-groups";
const MAX_NAME_LEN: usize = 256;
const MAX_GROUPS: usize = 1_000;

/// A user as the API knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// Groups from the token or header (engine groups are added by [`Identity::principals`]).
    pub groups: Vec<String>,
}

impl Identity {
    /// `user:{user}` and `group:{g}` for each group of the request, in every application, and
    /// per application the groups its identity realm gives the user.
    pub fn principals(&self, view: &View) -> Principals {
        Principals::new(
            &self.user,
            &self.groups,
            view.applications()
                .map(|app| (app.to_owned(), view.groups_of(app, &self.user))),
        )
    }

    /// The groups that count for this user in `application`: the request's and those of the
    /// application's identity realm. Sent with each command, for the engine to judge.
    pub fn groups_in(&self, view: &View, application: &str) -> Vec<String> {
        let mut groups: Vec<String> = self
            .groups
            .iter()
            .cloned()
            .chain(view.groups_of(application, &self.user))
            .collect();
        groups.sort();
        groups.dedup();
        groups
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("no credentials: send `Authorization: Bearer <JWT>`{0}")]
    Missing(&'static str),
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("invalid identity: {0}")]
    Invalid(String),
}

impl IdentityError {
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::Missing(_) => "unauthenticated",
            IdentityError::InvalidToken(_) => "invalid_token",
            IdentityError::Invalid(_) => "invalid_identity",
        }
    }
}

/// How this service identifies users; built once from the configuration.
pub struct Authenticator {
    keys: Vec<(DecodingKey, Validation)>,
    trust_headers: bool,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    groups: Vec<String>,
}

pub struct AuthConfig<'a> {
    pub hs256_secret: Option<&'a str>,
    pub rs256_public_key_pem: Option<&'a [u8]>,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
    pub trust_headers: bool,
}

impl Authenticator {
    pub fn new(config: AuthConfig<'_>) -> Result<Authenticator, String> {
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.set_required_spec_claims(&["exp", "sub"]);
            v.leeway = 30;
            if let Some(iss) = config.issuer {
                v.set_issuer(&[iss]);
            }
            match config.audience {
                Some(aud) => v.set_audience(&[aud]),
                None => v.validate_aud = false,
            }
            v
        };
        let mut keys = Vec::new();
        if let Some(secret) = config.hs256_secret {
            keys.push((
                DecodingKey::from_secret(secret.as_bytes()),
                validation(Algorithm::HS256),
            ));
        }
        if let Some(pem) = config.rs256_public_key_pem {
            let key = DecodingKey::from_rsa_pem(pem)
                .map_err(|e| format!("--jwt-public-key is not an RSA public key in PEM: {e}"))?;
            keys.push((key, validation(Algorithm::RS256)));
        }
        Ok(Authenticator {
            keys,
            trust_headers: config.trust_headers,
        })
    }

    /// The identity of a request.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Identity, IdentityError> {
        let header = |name| {
            headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map_err(|_| IdentityError::Invalid(format!("{name} is not text")))
                })
                .transpose()
        };
        if let Some(auth) = header("authorization")? {
            if !self.keys.is_empty() {
                let token = auth
                    .strip_prefix("Bearer ")
                    .or_else(|| auth.strip_prefix("bearer "))
                    .ok_or_else(|| {
                        IdentityError::InvalidToken("expected `Authorization: Bearer <JWT>`".into())
                    })?;
                return self.verify(token.trim());
            }
        }
        if self.trust_headers {
            if let Some(user) = header(USER_HEADER)? {
                let groups = header(GROUPS_HEADER)?.unwrap_or_default();
                let groups = groups
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect();
                return checked(user.trim().to_owned(), groups);
            }
        }
        Err(IdentityError::Missing(if self.trust_headers {
            " or X-User / X-Groups"
        } else {
            ""
        }))
    }

    fn verify(&self, token: &str) -> Result<Identity, IdentityError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdentityError::InvalidToken(e.to_string()))?;
        let (key, validation) = self
            .keys
            .iter()
            .find(|(_, v)| v.algorithms.contains(&header.alg))
            .ok_or_else(|| {
                IdentityError::InvalidToken(format!(
                    "algorithm {:?} is not accepted here",
                    header.alg
                ))
            })?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| IdentityError::InvalidToken(e.to_string()))?;
        checked(data.claims.sub, data.claims.groups)
    }
}

fn checked(user: String, groups: Vec<String>) -> Result<Identity, IdentityError> {
    valid_name("user", &user)?;
    if groups.len() > MAX_GROUPS {
        return Err(IdentityError::Invalid(format!(
            "{} groups; at most {MAX_GROUPS}",
            groups.len()
        )));
    }
    for g in &groups {
        valid_name("group", g)?;
    }
    Ok(Identity { user, groups })
}

fn valid_name(what: &str, name: &str) -> Result<(), IdentityError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(IdentityError::Invalid(format!(
            "{what} must be 1 to {MAX_NAME_LEN} characters without control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "a-test-secret-of-32-bytes-length";

    fn auth(trust_headers: bool) -> Authenticator {
        Authenticator::new(AuthConfig {
            hs256_secret: Some(SECRET),
            rs256_public_key_pem: None,
            issuer: None,
            audience: None,
            trust_headers,
        })
        .expect("authenticator")
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("token")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    fn exp() -> i64 {
        chrono::Utc::now().timestamp() + 600
    }

    #[test]
    fn a_valid_token_names_user_and_groups() {
        let t = token(
            serde_json::json!({"sub": "kermit", "groups": ["muppets"], "exp": exp()}),
            SECRET,
        );
        let id = auth(false)
            .identify(&headers(&[("authorization", &format!("Bearer {t}"))]))
            .expect("identity");
        assert_eq!(id.user, "kermit");
        assert_eq!(id.groups, ["muppets"]);
    }

    #[test]
    fn bad_tokens_are_refused() {
        let a = auth(false);
        let wrong_key = token(
            serde_json::json!({"sub": "k", "exp": exp()}),
            "another-secret-0123456789",
        );
        let expired = token(serde_json::json!({"sub": "k", "exp": 1_000}), SECRET);
        let no_exp = token(serde_json::json!({"sub": "k"}), SECRET);
        for t in [
            wrong_key.as_str(),
            expired.as_str(),
            no_exp.as_str(),
            "garbage",
        ] {
            let e = a
                .identify(&headers(&[("authorization", &format!("Bearer {t}"))]))
                .expect_err("refused");
            assert_eq!(e.code(), "invalid_token", "{t}: {e}");
        }
        assert_eq!(
            a.identify(&headers(&[("x-user", "kermit")]))
                .expect_err("headers are not trusted")
                .code(),
            "unauthenticated"
        );
    }

    #[test]
    fn rs256_tokens_are_checked_with_the_public_key() {
        // A fresh key pair from openssl (Debian's `openssl` package).
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("key.pem");
        let public = dir.path().join("public.pem");
        let run = |args: &[&str]| {
            let ok = std::process::Command::new("openssl")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl (apt install openssl)")
                .success();
            assert!(ok, "openssl {args:?}");
        };
        let (key_s, public_s) = (key.display().to_string(), public.display().to_string());
        run(&["genrsa", "-out", &key_s, "2048"]);
        run(&["rsa", "-in", &key_s, "-pubout", "-out", &public_s]);
        let public_pem = std::fs::read(&public).expect("public key");
        let auth = Authenticator::new(AuthConfig {
            hs256_secret: None,
            rs256_public_key_pem: Some(&public_pem),
            issuer: Some("taskpool-tests"),
            audience: None,
            trust_headers: false,
        })
        .expect("authenticator");
        let private = EncodingKey::from_rsa_pem(&std::fs::read(&key).expect("key")).expect("rsa");
        let sign = |claims: serde_json::Value| {
            encode(&Header::new(Algorithm::RS256), &claims, &private).expect("token")
        };
        let bearer = |t: &str| headers(&[("authorization", &format!("Bearer {t}"))]);
        let good = sign(
            serde_json::json!({"sub": "gonzo", "groups": ["g"], "exp": exp(), "iss": "taskpool-tests"}),
        );
        let id = auth.identify(&bearer(&good)).expect("identity");
        assert_eq!(
            (id.user.as_str(), id.groups.as_slice()),
            ("gonzo", ["g".to_owned()].as_slice())
        );
        let other_issuer =
            sign(serde_json::json!({"sub": "gonzo", "exp": exp(), "iss": "elsewhere"}));
        let hs256 = token(serde_json::json!({"sub": "gonzo", "exp": exp()}), SECRET);
        for bad in [other_issuer, hs256] {
            let e = auth.identify(&bearer(&bad)).expect_err("refused");
            assert_eq!(e.code(), "invalid_token", "{e}");
        }
    }

    #[test]
    fn trusted_headers_give_user_and_groups() {
        let id = auth(true)
            .identify(&headers(&[("x-user", "piggy"), ("x-groups", "a, b,,c")]))
            .expect("identity");
        assert_eq!(id.groups, ["a", "b", "c"]);
        let e = auth(true)
            .identify(&headers(&[("x-user", "")]))
            .expect_err("empty user");
        assert_eq!(e.code(), "invalid_identity");
    }
}
