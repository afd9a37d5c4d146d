//! PASETO `v2.public` and `v4.public` framing, on top of `pasetors`.
//!
//! This layer knows tokens, keys and footers, not Strata claims. Services go through
//! [`Verifier`](crate::Verifier) and [`SigningKey::sign`](crate::SigningKey::sign); the
//! functions here are public for the official test vectors and for tools.

use crate::error::Error;
use crate::keys::{PublicKey, SigningKey};
use pasetors::keys::AsymmetricPublicKey;
use pasetors::token::{Public, UntrustedToken};
use pasetors::version2::V2;
use pasetors::version4::V4;

/// Longest token accepted, in bytes. Identity's tokens are well under 1 KiB; anything
/// longer is refused before it is decoded, so a huge token costs nothing to reject.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Which PASETO public-key version a token uses. Both are Ed25519; Strata issues
/// [`TokenVersion::V2`] by default (SPEC §4) and accepts either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenVersion {
    /// `v2.public.`
    V2,
    /// `v4.public.`
    V4,
}

impl TokenVersion {
    /// The token prefix, e.g. `v2.public.`.
    pub fn header(self) -> &'static str {
        match self {
            TokenVersion::V2 => "v2.public.",
            TokenVersion::V4 => "v4.public.",
        }
    }

    /// The PASERK key-id prefix for keys of this version, e.g. `k2.pid.`.
    pub fn kid_prefix(self) -> &'static str {
        match self {
            TokenVersion::V2 => "k2.pid.",
            TokenVersion::V4 => "k4.pid.",
        }
    }

    /// The version `token` claims to be, by its header alone.
    fn detect(token: &str) -> Result<TokenVersion, Error> {
        if token.starts_with(TokenVersion::V2.header()) {
            Ok(TokenVersion::V2)
        } else if token.starts_with(TokenVersion::V4.header()) {
            Ok(TokenVersion::V4)
        } else if token.starts_with("v2.local.") || token.starts_with("v4.local.") {
            Err(Error::MalformedToken(
                "local (encrypted) PASETO tokens are not accepted; expected v2.public",
            ))
        } else if token.starts_with('v') && token.get(2..3) == Some(".") {
            Err(Error::MalformedToken(
                "this PASETO version or purpose is not accepted; expected v2.public",
            ))
        } else {
            Err(Error::MalformedToken(
                "not a PASETO token (expected it to start with v2.public.)",
            ))
        }
    }
}

/// A token whose signature has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The token's version.
    pub version: TokenVersion,
    /// The signed payload (UTF-8, by the PASETO spec).
    pub payload: String,
    /// The signed footer; empty if the token has none.
    pub footer: Vec<u8>,
}

/// A parsed token whose signature has not been checked yet. Its footer may be read (to
/// pick the key) but must not be trusted.
pub(crate) enum UntrustedPublicToken {
    V2(UntrustedToken<Public, V2>),
    V4(UntrustedToken<Public, V4>),
}

impl UntrustedPublicToken {
    pub(crate) fn parse(token: &str) -> Result<UntrustedPublicToken, Error> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::TokenTooLong {
                len: token.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        const BAD_ENCODING: Error =
            Error::MalformedToken("the token's parts are not valid base64url PASETO encoding");
        Ok(match TokenVersion::detect(token)? {
            TokenVersion::V2 => {
                UntrustedPublicToken::V2(UntrustedToken::try_from(token).map_err(|_| BAD_ENCODING)?)
            }
            TokenVersion::V4 => {
                UntrustedPublicToken::V4(UntrustedToken::try_from(token).map_err(|_| BAD_ENCODING)?)
            }
        })
    }

    pub(crate) fn version(&self) -> TokenVersion {
        match self {
            UntrustedPublicToken::V2(_) => TokenVersion::V2,
            UntrustedPublicToken::V4(_) => TokenVersion::V4,
        }
    }

    pub(crate) fn untrusted_footer(&self) -> &[u8] {
        match self {
            UntrustedPublicToken::V2(t) => t.untrusted_footer(),
            UntrustedPublicToken::V4(t) => t.untrusted_footer(),
        }
    }

    /// Checks the signature with `key`; returns the verified token.
    pub(crate) fn verify(
        &self,
        key: &PublicKey,
        implicit_assertion: &[u8],
    ) -> Result<VerifiedToken, Error> {
        let trusted = match self {
            UntrustedPublicToken::V2(token) => {
                if !implicit_assertion.is_empty() {
                    return Err(v2_has_no_implicit_assertions());
                }
                let pk = AsymmetricPublicKey::<V2>::from(key.as_bytes())
                    .map_err(|_| Error::BadSignature)?;
                pasetors::version2::PublicToken::verify(&pk, token, None)
            }
            UntrustedPublicToken::V4(token) => {
                let pk = AsymmetricPublicKey::<V4>::from(key.as_bytes())
                    .map_err(|_| Error::BadSignature)?;
                pasetors::version4::PublicToken::verify(&pk, token, None, Some(implicit_assertion))
            }
        }
        .map_err(|e| match e {
            pasetors::errors::Error::PayloadInvalidUtf8 => {
                Error::MalformedToken("the signed payload is not UTF-8")
            }
            _ => Error::BadSignature,
        })?;
        Ok(VerifiedToken {
            version: self.version(),
            payload: trusted.payload().to_owned(),
            footer: trusted.footer().to_vec(),
        })
    }
}

fn v2_has_no_implicit_assertions() -> Error {
    Error::InvalidValue {
        what: "implicit assertion",
        reason: "v2 tokens have no implicit assertions; use v4 or pass an empty one".into(),
    }
}

/// Verifies `token` (`v2.public` or `v4.public`) against `key`.
///
/// `implicit_assertion` is v4's unsigned-but-authenticated context; it must be empty for v2.
/// Nothing in the payload or footer is interpreted: this is the raw PASETO operation.
pub fn verify_public(
    token: &str,
    key: &PublicKey,
    implicit_assertion: &[u8],
) -> Result<VerifiedToken, Error> {
    UntrustedPublicToken::parse(token)?.verify(key, implicit_assertion)
}

/// Signs `payload` (non-empty) with `key` as a `version` public token with `footer`
/// (empty for none). `implicit_assertion` must be empty for v2.
pub fn sign_public(
    key: &SigningKey,
    version: TokenVersion,
    payload: &[u8],
    footer: &[u8],
    implicit_assertion: &[u8],
) -> Result<String, Error> {
    let footer = (!footer.is_empty()).then_some(footer);
    match version {
        TokenVersion::V2 => {
            if !implicit_assertion.is_empty() {
                return Err(v2_has_no_implicit_assertions());
            }
            pasetors::version2::PublicToken::sign(key.v2_secret(), payload, footer)
        }
        TokenVersion::V4 => pasetors::version4::PublicToken::sign(
            key.v4_secret(),
            payload,
            footer,
            Some(implicit_assertion),
        ),
    }
    .map_err(|_| Error::Signing)
}
