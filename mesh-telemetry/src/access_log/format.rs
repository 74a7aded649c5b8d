use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Request, Response};

use crate::metrics::ResponseFlags;

/// The fields of one access log line (Envoy's names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// `START_TIME`, RFC 3339 UTC with milliseconds.
    pub start_time: String,
    /// `:METHOD`.
    pub method: String,
    /// `:PATH` (with query).
    pub path: String,
    /// `PROTOCOL`, e.g. `HTTP/1.1`.
    pub protocol: String,
    /// `RESPONSE_CODE` (0 without a response).
    pub response_code: u16,
    /// `RESPONSE_FLAGS` (`-` when none).
    pub response_flags: String,
    /// `BYTES_RECEIVED` (request `content-length`, 0 when unknown).
    pub bytes_received: u64,
    /// `BYTES_SENT` (response `content-length`, 0 when unknown).
    pub bytes_sent: u64,
    /// `DURATION` until the response headers, in milliseconds.
    pub duration_ms: u64,
    /// `X-FORWARDED-FOR`.
    pub x_forwarded_for: Option<String>,
    /// `USER-AGENT`.
    pub user_agent: Option<String>,
    /// `X-REQUEST-ID`.
    pub request_id: Option<String>,
    /// `:AUTHORITY`.
    pub authority: Option<String>,
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn content_length(h: &HeaderMap) -> u64 {
    header(h, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-26T15:30:00.123Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

impl Entry {
    pub(crate) fn from_request<B>(req: &Request<B>, now: SystemTime) -> Self {
        let h = req.headers();
        Self {
            start_time: rfc3339(now),
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
            protocol: format!("{:?}", req.version()),
            response_code: 0,
            response_flags: "-".into(),
            bytes_received: content_length(h),
            bytes_sent: 0,
            duration_ms: 0,
            x_forwarded_for: header(h, "x-forwarded-for"),
            user_agent: header(h, "user-agent"),
            request_id: header(h, "x-request-id"),
            authority: req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| header(h, "host")),
        }
    }

    pub(crate) fn fill_response<B>(&mut self, resp: &Response<B>) {
        self.response_code = resp.status().as_u16();
        self.bytes_sent = content_length(resp.headers());
        if let Some(f) = resp.extensions().get::<ResponseFlags>() {
            self.response_flags = f.0.into();
        }
    }

    /// Envoy's default format:
    /// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
    /// %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    /// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    /// "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` (no upstream service time
    /// or upstream host in process: `-`).
    pub fn envoy_line(&self) -> String {
        let q = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        format!(
            "[{}] \"{} {} {}\" {} {} {} {} {} - \"{}\" \"{}\" \"{}\" \"{}\" \"-\"",
            self.start_time,
            self.method,
            self.path,
            self.protocol,
            self.response_code,
            self.response_flags,
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            q(&self.x_forwarded_for),
            q(&self.user_agent),
            q(&self.request_id),
            q(&self.authority),
        )
    }

    /// One JSON object with Envoy's field names.
    pub fn json_line(&self) -> String {
        serde_json::json!({
            "start_time": self.start_time,
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "response_code": self.response_code,
            "response_flags": self.response_flags,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "duration": self.duration_ms,
            "x_forwarded_for": self.x_forwarded_for,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "authority": self.authority,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_164_800_123); // 2024-02-29 (leap day)
        assert_eq!(rfc3339(t), "2024-02-29T00:00:00.123Z");
    }
}
