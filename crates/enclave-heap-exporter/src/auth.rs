//! HTTP basic auth against `basic_auth_users` (user → bcrypt hash), as exporter-toolkit does it.
//!
//! - bcrypt is slow on purpose (tens of milliseconds at cost 10), so a verified user/password
//!   pair is remembered: a scrape every second costs one bcrypt per process, not one per
//!   scrape. The cache holds only *successful* pairs (an attacker's guesses cannot evict the
//!   scraper's entry), at most [`VERIFIED_CACHE_SIZE`] of them, and stores an HMAC of the pair
//!   under a key drawn at start, never the password.
//! - An unknown user's password is checked against the configured hash of the highest cost
//!   (and refused whatever the result), so the answer takes as long as for a known user with a
//!   wrong password: no user enumeration by timing, and no dummy hash to compute at start.
//!   bcrypt's own comparison is constant time; the cache is searched in constant time too.
//! - bcrypt runs on the blocking pool, one at a time (the slot is held until the hash is done,
//!   even if the client hangs up): a flood of wrong passwords costs at most one core and never
//!   stalls the async workers that serve scrapes.
//! - Nothing here logs a password, a hash or a username.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use http::HeaderValue;
use ring::hmac;
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

use crate::web_config::WebConfigError;

/// Most verified user/password pairs remembered.
pub const VERIFIED_CACHE_SIZE: usize = 64;

/// The users of `basic_auth_users` and what has been verified so far.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// The configured hash of the highest cost, to spend the same time on unknown users.
    dummy_hash: String,
    cache_key: hmac::Key,
    verified: Mutex<VecDeque<hmac::Tag>>,
    bcrypt_slot: Arc<Semaphore>,
}

impl BasicAuth {
    /// Checks that every password is a bcrypt hash; the error names the user, never the hash.
    pub(crate) fn new(users: BTreeMap<String, String>) -> Result<Self, WebConfigError> {
        let mut dummy: Option<(u32, &String)> = None;
        for (user, hash) in &users {
            let key = format!("basic_auth_users.{user}");
            if user.contains(':') {
                return Err(WebConfigError::invalid(
                    key,
                    "a user name cannot contain ':' (basic auth separates user and password with it)",
                ));
            }
            let parts: bcrypt::HashParts = hash.parse().map_err(|_| {
                WebConfigError::invalid(
                    &key,
                    "not a bcrypt hash (expected $2y$, $2b$ or $2a$, a cost and 53 characters; \
                     make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
                )
            })?;
            if dummy.is_none_or(|(cost, _)| parts.get_cost() > cost) {
                dummy = Some((parts.get_cost(), hash));
            }
        }
        let Some((_, dummy_hash)) = dummy else {
            return Err(WebConfigError::invalid(
                "basic_auth_users",
                "names no user; remove it to serve without basic auth",
            ));
        };
        let dummy_hash = dummy_hash.clone();
        let rng = ring::rand::SystemRandom::new();
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| {
            WebConfigError::invalid(
                "basic_auth_users",
                "the system random number generator failed",
            )
        })?;
        Ok(Self {
            users,
            dummy_hash,
            cache_key,
            verified: Mutex::new(VecDeque::with_capacity(VERIFIED_CACHE_SIZE)),
            bcrypt_slot: Arc::new(Semaphore::new(1)),
        })
    }

    /// How many users are configured.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// True when `authorization` holds `Basic` credentials of a configured user.
    pub async fn verify(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let tag = self.tag(&user, &password);
        if self.is_cached(&tag) {
            return true;
        }
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|user| self.users.get(user));
        let hash = known.unwrap_or(&self.dummy_hash).clone();
        let Ok(slot) = Arc::clone(&self.bcrypt_slot).acquire_owned().await else {
            return false;
        };
        let matches = tokio::task::spawn_blocking(move || {
            let matches = bcrypt::verify(&password, &hash).unwrap_or(false);
            drop(slot);
            matches
        })
        .await
        .unwrap_or(false);
        let allowed = known.is_some() && matches;
        if allowed {
            self.remember(tag);
        }
        allowed
    }

    fn tag(&self, user: &[u8], password: &[u8]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.cache_key);
        // Length-prefixed so ("ab", "c") and ("a", "bc") differ.
        context.update(&(user.len() as u64).to_be_bytes());
        context.update(user);
        context.update(password);
        context.sign()
    }

    fn is_cached(&self, tag: &hmac::Tag) -> bool {
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        // Look at every entry, whatever matches, so the time taken says nothing.
        verified
            .iter()
            .fold(subtle::Choice::from(0), |found, known| {
                found | known.as_ref().ct_eq(tag.as_ref())
            })
            .into()
    }

    fn remember(&self, tag: hmac::Tag) {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.iter().any(|known| known.as_ref() == tag.as_ref()) {
            return;
        }
        if verified.len() >= VERIFIED_CACHE_SIZE {
            verified.pop_front();
        }
        verified.push_back(tag);
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// `Basic base64(user:password)` → (user, password), as raw bytes. The scheme is
/// case-insensitive (RFC 7617); the password may contain ':'.
fn parse_basic(value: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = value.as_bytes();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let encoded = rest.trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let colon = decoded.iter().position(|&byte| byte == b':')?;
    let (user, password) = decoded.split_at(colon);
    Some((user.to_vec(), password[1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user_password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_password);
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn auth() -> BasicAuth {
        let hash = bcrypt::hash("s3cret:with colon", 4).unwrap();
        BasicAuth::new(BTreeMap::from([("prometheus".to_owned(), hash)])).unwrap()
    }

    #[test]
    fn parses_basic_credentials() {
        assert_eq!(
            parse_basic(&header("user:pa:ss")),
            Some((b"user".to_vec(), b"pa:ss".to_vec()))
        );
        let lower = HeaderValue::from_static("basic dTpw");
        assert_eq!(parse_basic(&lower), Some((b"u".to_vec(), b"p".to_vec())));
        for bad in ["Bearer dTpw", "Basic", "Basic !!!", "Basic dXNlcg=="] {
            assert_eq!(parse_basic(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn verifies_and_remembers_only_successes() {
        let auth = auth();
        assert!(!auth.verify(None).await);
        assert!(!auth.verify(Some(&header("prometheus:wrong"))).await);
        assert!(!auth.verify(Some(&header("nobody:s3cret:with colon"))).await);
        assert!(
            auth.verify(Some(&header("prometheus:s3cret:with colon")))
                .await
        );
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert!(
            auth.verify(Some(&header("prometheus:s3cret:with colon")))
                .await
        );
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn accepts_htpasswd_hashes() {
        // `htpasswd -B` writes $2y$ hashes; this one (of "fakepassword", cost 10) is the dummy
        // exporter-toolkit itself verifies unknown users against.
        let hash = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
        let auth = BasicAuth::new(BTreeMap::from([("node".to_owned(), hash.to_owned())])).unwrap();
        assert!(auth.verify(Some(&header("node:fakepassword"))).await);
        assert!(!auth.verify(Some(&header("node:fakepassword2"))).await);
    }

    #[test]
    fn the_cache_is_bounded() {
        let auth = auth();
        for n in 0..(VERIFIED_CACHE_SIZE + 10) {
            auth.remember(auth.tag(b"u", n.to_string().as_bytes()));
        }
        assert_eq!(auth.verified.lock().unwrap().len(), VERIFIED_CACHE_SIZE);
        assert!(!auth.is_cached(&auth.tag(b"u", b"0")));
        assert!(auth.is_cached(&auth.tag(b"u", (VERIFIED_CACHE_SIZE + 9).to_string().as_bytes())));
    }

    #[test]
    fn rejects_what_is_not_a_bcrypt_hash() {
        for bad in [
            "plaintext",
            "$1$abc$def",
            "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
        ] {
            let users = BTreeMap::from([("alice".to_owned(), bad.to_owned())]);
            let error = BasicAuth::new(users).unwrap_err().to_string();
            assert!(
                error.starts_with("basic_auth_users.alice: not a bcrypt hash"),
                "{error}"
            );
            assert!(!error.contains(bad), "the hash must not be echoed: {error}");
        }
    }
}
