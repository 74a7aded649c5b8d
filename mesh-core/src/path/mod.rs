//! Request-path normalization as Envoy's HTTP connection manager does it, applied before
//! routing and RBAC so that a policy on `/admin` cannot be bypassed with `/x/../admin`,
//! `/%61dmin` or `/a\..\admin`, and so that the path the app sees is the one that was checked.
//!
//! The three HCM knobs ([`PathNormalization`]) and their order follow Envoy:
//! 1. `path_with_escaped_slashes_action`: `%2F`/`%5C` (any case) in the path are kept, make the
//!    request fail (400), or are decoded (then forwarded, or answered with a 307 redirect to
//!    the normalized path);
//! 2. `normalize_path`: RFC 3986 dot-segment removal with Envoy's URL canonicalizer rules:
//!    `\` is a separator, `%2E` counts as a dot, unreserved percent-encodings
//!    (`A-Z a-z 0-9 - . _ ~`) are decoded, other encodings are kept exactly as sent (case
//!    included), characters a URL may not hold raw are percent-encoded, `%00` is refused, and
//!    a segment `.;...` or `..;...` (literal dots, then `;`) counts as `.` or `..`;
//! 3. `merge_slashes`: runs of `/` become one.
//!
//! The query is never touched. A fragment (`#`), controls, spaces and non-ASCII bytes are
//! refused (400), as Envoy does. (hyper's parser drops a fragment before a service sees
//! it, so behind hyper `/a#x` is served as `/a`: checked and forwarded alike.) Istio sets
//! these from `meshConfig.pathNormalization`; its default, [`PathNormalization::BASE`], is
//! `normalize_path` alone.
//!
//! ```
//! use mesh_core::path::{PathNormalization, PathOutcome};
//!
//! let base = PathNormalization::BASE;
//! assert_eq!(base.apply("/x/../%61dmin?q=/../"), PathOutcome::Forward("/admin?q=/../".into()));
//! assert_eq!(base.apply("/admin"), PathOutcome::Unchanged);
//! assert_eq!(base.apply("/a/%00"), PathOutcome::Reject("invalid path"));
//! ```

mod canon;
mod layer;

pub use layer::{PathBody, PathNormalizationLayer, PathNormalize, PathNormalizeFuture};

/// What to do with `%2F` and `%5C` in the path (Envoy's `path_with_escaped_slashes_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EscapedSlashesAction {
    /// Leave them encoded (Envoy's default for `IMPLEMENTATION_SPECIFIC_DEFAULT`).
    #[default]
    KeepUnchanged,
    /// Refuse the request with 400.
    RejectRequest,
    /// Decode them, normalize, and answer 307 with the result as `Location`.
    UnescapeAndRedirect,
    /// Decode them, normalize, and forward.
    UnescapeAndForward,
}

/// The path normalization an HTTP connection manager applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PathNormalization {
    /// RFC 3986 normalization (Envoy's `normalize_path`).
    pub normalize_path: bool,
    /// Merge runs of slashes (Envoy's `merge_slashes`).
    pub merge_slashes: bool,
    /// Handling of encoded slashes (Envoy's `path_with_escaped_slashes_action`).
    pub escaped_slashes: EscapedSlashesAction,
}

impl Default for PathNormalization {
    /// [`PathNormalization::BASE`]: secure by default, as Istio configures every sidecar.
    fn default() -> Self {
        Self::BASE
    }
}

/// The result of normalizing one request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathOutcome {
    /// Already normal: forward it as it is.
    Unchanged,
    /// Forward with this path (and the original query).
    Forward(String),
    /// Answer 307 with this `Location` (escaped slashes under `UnescapeAndRedirect`).
    Redirect(String),
    /// Answer 400; the reason is for logs.
    Reject(&'static str),
}

impl PathNormalization {
    /// Istio's `NONE`: the path is forwarded as sent.
    pub const NONE: Self = Self {
        normalize_path: false,
        merge_slashes: false,
        escaped_slashes: EscapedSlashesAction::KeepUnchanged,
    };
    /// Istio's default `BASE`: RFC 3986 normalization, escaped slashes kept.
    pub const BASE: Self = Self {
        normalize_path: true,
        merge_slashes: false,
        escaped_slashes: EscapedSlashesAction::KeepUnchanged,
    };
    /// Istio's `MERGE_SLASHES`: `BASE` plus merging of slashes.
    pub const MERGE_SLASHES: Self = Self {
        normalize_path: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashesAction::KeepUnchanged,
    };
    /// Istio's `DECODE_AND_MERGE_SLASHES`: `MERGE_SLASHES` plus decoding of `%2F`/`%5C`.
    pub const DECODE_AND_MERGE_SLASHES: Self = Self {
        normalize_path: true,
        merge_slashes: true,
        escaped_slashes: EscapedSlashesAction::UnescapeAndForward,
    };

    /// Whether this leaves every path as sent (so callers can skip the work).
    pub fn is_noop(&self) -> bool {
        *self == Self::NONE
    }

    /// Normalizes an origin-form request target (`/path?query`).
    ///
    /// Targets that do not start with `/` are refused, as Envoy refuses them; the caller
    /// decides about asterisk-form (`OPTIONS *`) and authority-form (`CONNECT`) first.
    pub fn apply(&self, target: &str) -> PathOutcome {
        if !target.starts_with('/') {
            return PathOutcome::Reject("path does not start with '/'");
        }
        if target.contains('#') {
            return PathOutcome::Reject("fragment in path");
        }
        // What Envoy's HTTP/1 codec refuses before normalization: controls, space, non-ASCII.
        if target.bytes().any(|c| !(0x21..0x7f).contains(&c)) {
            return PathOutcome::Reject("invalid character in path");
        }
        let (path, query) = target.split_at(target.find('?').unwrap_or(target.len()));
        let mut redirect = false;
        let mut out: std::borrow::Cow<'_, str> = path.into();
        if self.escaped_slashes != EscapedSlashesAction::KeepUnchanged
            && let Some(unescaped) = canon::unescape_slashes(&out)
        {
            match self.escaped_slashes {
                EscapedSlashesAction::RejectRequest => {
                    return PathOutcome::Reject("escaped slash in path");
                }
                EscapedSlashesAction::UnescapeAndRedirect => redirect = true,
                _ => {}
            }
            out = unescaped.into();
        }
        if self.normalize_path {
            match canon::canonicalize(&out) {
                Some(std::borrow::Cow::Owned(c)) => out = c.into(),
                Some(std::borrow::Cow::Borrowed(_)) => {}
                None => return PathOutcome::Reject("invalid path"),
            }
        }
        if self.merge_slashes
            && let Some(merged) = canon::merge_slashes(&out)
        {
            out = merged.into();
        }
        if redirect {
            return PathOutcome::Redirect(format!("{out}{query}"));
        }
        if out == path {
            PathOutcome::Unchanged
        } else {
            PathOutcome::Forward(format!("{out}{query}"))
        }
    }
}

#[cfg(test)]
mod tests;
