//! The request and response every case exchanges, and the app that answers it.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

/// Response body size: 1 KiB, a typical small JSON answer.
pub const RESPONSE_BYTES: usize = 1024;

/// Request path.
pub const PATH: &str = "/payload";

/// The response body (the same bytes for every case).
pub fn body() -> Bytes {
    static BODY: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BODY.get_or_init(|| {
        Bytes::from(
            (0..RESPONSE_BYTES)
                .map(|i| b'a' + (i % 26) as u8)
                .collect::<Vec<u8>>(),
        )
    })
    .clone()
}

/// The app: `GET /payload` answers 200 with [`body`], anything else 404.
pub async fn app<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = if req.uri().path() == PATH {
        Response::new(Full::new(body()))
    } else {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

/// Checks a received response: status 200 and the full payload.
pub fn check(status: StatusCode, len: usize) -> Result<(), crate::Error> {
    if status != StatusCode::OK {
        return Err(format!("status {status}, expected 200").into());
    }
    if len != RESPONSE_BYTES {
        return Err(format!("body of {len} bytes, expected {RESPONSE_BYTES}").into());
    }
    Ok(())
}
