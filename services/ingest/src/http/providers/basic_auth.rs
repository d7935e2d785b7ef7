//! HTTP basic authentication (RFC 7617) of the providers that have no signature (SendGrid
//! Inbound Parse, Postmark inbound): the credentials are put in the webhook URL
//! (`https://user:password@host/v1/providers/sendgrid`) and sent as `Authorization: Basic`.
//! Both the user name and the password are compared in constant time (`subtle`), so the
//! answer's timing does not tell how much of either was right.

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use super::refused_auth;
use crate::config::Secret;
use crate::http::intake::Refusal;

/// The credentials a provider must send. `Debug` shows the user name only.
pub struct BasicAuth {
    username: String,
    password: Secret,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

impl BasicAuth {
    pub fn new(username: impl Into<String>, password: Secret) -> Self {
        Self {
            username: username.into(),
            password,
        }
    }

    /// `Ok` when the request's `Authorization: Basic` header holds these credentials; else a
    /// 401 `bad-auth` naming what was wrong, never which half.
    pub(in crate::http) fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(refused_auth(
                "bad-auth",
                "HTTP basic authentication is required: put user:password in the webhook URL",
            ));
        };
        let value = value.to_str().unwrap_or("").trim();
        let encoded = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, rest)| rest.trim());
        let decoded = encoded.and_then(|e| STANDARD.decode(e).ok());
        let Some((user, password)) = decoded
            .as_deref()
            .and_then(|d| d.iter().position(|&b| b == b':').map(|i| d.split_at(i)))
        else {
            return Err(refused_auth(
                "bad-auth",
                "Authorization is not `Basic base64(user:password)`",
            ));
        };
        let password = &password[1..];
        let user_ok = user.ct_eq(self.username.as_bytes());
        let password_ok = password.ct_eq(self.password.expose().as_bytes());
        if bool::from(user_ok & password_ok) {
            Ok(())
        } else {
            Err(refused_auth("bad-auth", "wrong user name or password"))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header"),
        );
        h
    }

    #[test]
    fn only_the_exact_credentials_pass() {
        let auth = BasicAuth::new("sendgrid", Secret::new("pa:ss-0123456789abcdef"));
        let basic = |creds: &str| format!("Basic {}", STANDARD.encode(creds));
        assert!(
            auth.check(&headers(&basic("sendgrid:pa:ss-0123456789abcdef")))
                .is_ok()
        );
        assert!(
            auth.check(&headers(&basic("sendgrid:pa:ss-0123456789abcde")))
                .is_err()
        );
        assert!(
            auth.check(&headers(&basic("Sendgrid:pa:ss-0123456789abcdef")))
                .is_err()
        );
        assert!(auth.check(&headers(&basic("sendgrid"))).is_err());
        assert!(auth.check(&headers("Bearer x")).is_err());
        assert!(auth.check(&HeaderMap::new()).is_err());
        assert!(
            !format!("{auth:?}").contains("0123456789"),
            "no password in Debug"
        );
    }
}
