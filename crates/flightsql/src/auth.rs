//! Bearer-token authentication of every call, and the Basic-auth handshake that hands a
//! Flight SQL client its bearer token.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The user a call was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User name from the token table.
    pub user: String,
    /// The token the caller presented.
    pub token: String,
}

/// Where the users behind API tokens are looked up.
pub trait Credentials: Send + Sync + 'static {
    /// The active user holding `token`, or why the call is refused.
    fn user(&self, token: &str) -> Result<String, Status>;

    /// Told of every refused call, with the token if one was presented: where refusals
    /// are recorded.
    fn refused(&self, _token: Option<&str>, _reason: &str) {}
}

/// A fixed user name → token map, as in a node's config.
impl Credentials for BTreeMap<String, String> {
    fn user(&self, token: &str) -> Result<String, Status> {
        self.iter()
            .find(|(_, t)| same_secret(t, token))
            .map(|(user, _)| user.clone())
            .ok_or_else(|| Status::unauthenticated("unknown or revoked token"))
    }
}

/// Whether `presented` is the secret `held`, compared by their SHA-256 digests, so that
/// the time a comparison takes tells a caller nothing of how much of a secret they
/// guessed.
pub fn same_secret(held: &str, presented: &str) -> bool {
    Sha256::digest(held.as_bytes()) == Sha256::digest(presented.as_bytes())
}

/// The interceptor that authenticates every call against [`Credentials`].
#[derive(Clone)]
pub struct TokenTable {
    credentials: Arc<dyn Credentials>,
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTable").finish_non_exhaustive()
    }
}

impl TokenTable {
    /// Builds the table from user name → token pairs.
    pub fn new(tokens: &BTreeMap<String, String>) -> Self {
        Self::with(tokens.clone())
    }

    /// Authenticates against `credentials`, which may change while serving.
    pub fn with(credentials: impl Credentials) -> Self {
        Self {
            credentials: Arc::new(credentials),
        }
    }

    /// Authenticates `Authorization: Bearer <token>`, or `Basic` with the token as
    /// password; a refusal is reported to the credentials.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let (token, result) = self.check(metadata);
        if let Err(status) = &result {
            self.credentials.refused(token.as_deref(), status.message());
        }
        result
    }

    fn check(&self, metadata: &MetadataMap) -> (Option<String>, Result<Caller, Status>) {
        let token = match bearer_token(metadata) {
            Ok(token) => token,
            Err(status) => return (None, Err(status)),
        };
        let result = self.credentials.user(&token).map(|user| Caller {
            user,
            token: token.clone(),
        });
        (Some(token), result)
    }
}

/// The token of `Authorization: Bearer <token>`, or of `Basic` as its password.
fn bearer_token(metadata: &MetadataMap) -> Result<String, Status> {
    let header = metadata
        .get("authorization")
        .ok_or_else(|| {
            Status::unauthenticated("no credentials: send `authorization: Bearer <token>`")
        })?
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    let token = if let Some(token) = header.strip_prefix("Bearer ") {
        token.trim().to_string()
    } else if let Some(encoded) = header.strip_prefix("Basic ") {
        let decoded = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))?;
        decoded
            .split_once(':')
            .map(|(_, password)| password.to_string())
            .unwrap_or(decoded)
    } else {
        return Err(Status::unauthenticated(
            "unsupported authorization scheme; use Bearer",
        ));
    };
    Ok(token)
}

impl Interceptor for TokenTable {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.authenticate(request.metadata())?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TokenTable {
        TokenTable::new(&BTreeMap::from([(
            "ana".to_string(),
            "s3cret-token".to_string(),
        )]))
    }

    fn with_header(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().unwrap());
        map
    }

    #[test]
    fn bearer_and_basic() {
        let caller = table()
            .authenticate(&with_header("Bearer s3cret-token"))
            .unwrap();
        assert_eq!(caller.user, "ana");
        let basic = format!("Basic {}", STANDARD.encode("ana:s3cret-token"));
        assert_eq!(
            table().authenticate(&with_header(&basic)).unwrap().user,
            "ana"
        );
    }

    #[test]
    fn refuses_unknown_and_missing() {
        assert!(table().authenticate(&with_header("Bearer nope")).is_err());
        assert!(table().authenticate(&MetadataMap::new()).is_err());
        assert!(table().authenticate(&with_header("Digest x")).is_err());
    }
}
