//! Keyed tokens of identifiers: HMAC-SHA256 under the nodes' linkage key, so that equal
//! identifiers match across nodes while the coordinator, without the key, learns nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a token: a truncated HMAC-SHA256.
pub const TOKEN_BYTES: usize = 16;

/// Characters of a token in query results: its bytes in unpadded base64.
pub const TOKEN_CHARS: usize = (4 * TOKEN_BYTES).div_ceil(3);

/// A token.
pub type Token = [u8; TOKEN_BYTES];

/// Makes tokens under one key and epoch.
#[derive(Clone)]
pub struct Tokenizer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Tokens under `key` for key `epoch`.
    pub fn new(key: &str, epoch: u32) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
        mac.update(&epoch.to_be_bytes());
        Self { mac }
    }

    /// The token of `value`.
    pub fn token(&self, value: &str) -> Token {
        self.token_of(&[value.as_bytes()])
    }

    /// The token of the group whose key, in Arrow's row format, is `key`: 64 bits, set
    /// apart from identifiers' tokens, so that nodes name the same group alike.
    pub fn group(&self, key: &[u8]) -> u64 {
        let token = self.token_of(&[b"sunlight group\0", key]);
        u64::from_be_bytes(token[..8].try_into().expect("16 bytes"))
    }

    fn token_of(&self, parts: &[&[u8]]) -> Token {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        let digest = mac.finalize().into_bytes();
        digest[..TOKEN_BYTES].try_into().expect("digest is longer")
    }

    /// The token of `value` as unpadded URL-safe base64, the form tokens take inside
    /// query results, written in `buffer`.
    pub fn text<'b>(&self, value: &str, buffer: &'b mut [u8; TOKEN_CHARS]) -> &'b str {
        let written = URL_SAFE_NO_PAD
            .encode_slice(self.token(value), buffer)
            .expect("room for the token's characters");
        std::str::from_utf8(&buffer[..written]).expect("base64 is ASCII")
    }
}
