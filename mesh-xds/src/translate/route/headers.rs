//! Header names, values and the add/remove lists of routes and virtual hosts.

use envoy_types::pb::envoy::config::core::v3 as core;
use mesh_core::model::{AppendAction, HeaderOps, HeaderValueOption};

use crate::translate::{At, Invalid, Res, bail};

pub(super) fn valid_header_name(h: &str) -> Res<()> {
    if h.is_empty() {
        return bail("header name must not be empty");
    }
    if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
        return bail(format!("{h:?} is not a valid header name"));
    }
    Ok(())
}

pub(super) fn header_name_for_mutation(h: &str) -> Res<String> {
    if h.starts_with(':') || h.eq_ignore_ascii_case("host") {
        return bail(format!("{h:?}: pseudo-headers and host cannot be modified"));
    }
    valid_header_name(h)?;
    Ok(h.to_ascii_lowercase())
}

pub(super) fn header_value_option(o: &core::HeaderValueOption) -> Res<HeaderValueOption> {
    use core::header_value_option::HeaderAppendAction as A;
    let Some(h) = &o.header else {
        return bail("header is required");
    };
    let name = header_name_for_mutation(&h.key)?;
    let value = if h.raw_value.is_empty() {
        h.value.clone()
    } else {
        String::from_utf8(h.raw_value.clone())
            .map_err(|_| Invalid::new(format!("{name}: raw_value is not UTF-8")))?
    };
    if http::HeaderValue::from_str(&value).is_err() {
        return bail(format!("{name}: value is not a valid header value"));
    }
    let action = match (&o.append, A::try_from(o.append_action)) {
        (Some(_), Ok(a)) if a != A::AppendIfExistsOrAdd => {
            return bail(format!(
                "{name}: append and append_action are mutually exclusive"
            ));
        }
        (Some(b), _) if b.value => AppendAction::Append,
        (Some(_), _) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(A::AppendIfExistsOrAdd)) => AppendAction::Append,
        (None, Ok(A::AddIfAbsent)) => AppendAction::AddIfAbsent,
        (None, Ok(A::OverwriteIfExistsOrAdd)) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(A::OverwriteIfExists)) => AppendAction::OverwriteIfExists,
        (None, Err(_)) => {
            return bail(format!("{name}: unknown append_action {}", o.append_action));
        }
    };
    Ok(HeaderValueOption {
        name,
        value,
        action,
        keep_empty_value: o.keep_empty_value,
    })
}

pub(crate) fn header_adds(
    list: &[core::HeaderValueOption],
    field: &str,
) -> Res<Vec<HeaderValueOption>> {
    list.iter()
        .enumerate()
        .map(|(i, o)| header_value_option(o).at_with(|| format!(".{field}[{i}]")))
        .collect()
}

pub(super) fn header_removes(list: &[String], field: &str) -> Res<Vec<String>> {
    list.iter()
        .enumerate()
        .map(|(i, h)| header_name_for_mutation(h).at_with(|| format!(".{field}[{i}]")))
        .collect()
}

pub(super) fn header_ops(
    req_add: &[core::HeaderValueOption],
    req_remove: &[String],
    resp_add: &[core::HeaderValueOption],
    resp_remove: &[String],
) -> Res<HeaderOps> {
    Ok(HeaderOps {
        request_headers_to_add: header_adds(req_add, "request_headers_to_add")?,
        request_headers_to_remove: header_removes(req_remove, "request_headers_to_remove")?,
        response_headers_to_add: header_adds(resp_add, "response_headers_to_add")?,
        response_headers_to_remove: header_removes(resp_remove, "response_headers_to_remove")?,
    })
}
