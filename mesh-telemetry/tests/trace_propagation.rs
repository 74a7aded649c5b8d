//! A trace started by a client crosses two services with one trace id and correct parent
//! links (W3C and B3 formats), the second hop made from inside the first service's handler.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use mesh_telemetry::trace::{Propagation, TraceContext, TraceLayer, current};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

type Seen = Arc<Mutex<Vec<(&'static str, TraceContext)>>>;

async fn run(propagation: Propagation) -> Vec<(&'static str, TraceContext)> {
    let seen: Seen = Arc::default();

    // Service B: records its span.
    let s = seen.clone();
    let b = TraceLayer::server(propagation).layer(service_fn(move |_req: Request<()>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(("b", current().unwrap()));
            Ok::<_, BoxError>(Response::new(()))
        }
    }));
    // Service A: records its span, then calls B through a client layer.
    let s = seen.clone();
    let a = TraceLayer::server(propagation).layer(service_fn(move |_req: Request<()>| {
        let s = s.clone();
        let b = b.clone();
        async move {
            s.lock().unwrap().push(("a", current().unwrap()));
            let mut to_b =
                TraceLayer::client(propagation).layer(service_fn(move |req: Request<()>| {
                    // The "wire": what B's server sees is only the headers.
                    let mut b = b.clone();
                    async move {
                        let mut fresh = Request::new(());
                        *fresh.headers_mut() = req.headers().clone();
                        b.ready().await?.call(fresh).await
                    }
                }));
            to_b.ready().await?.call(Request::new(())).await
        }
    }));
    // The client that starts the trace.
    let s = seen.clone();
    let mut client = TraceLayer::client(propagation).layer(service_fn(move |req: Request<()>| {
        s.lock().unwrap().push((
            "client",
            TraceContext::extract(req.headers(), propagation).unwrap(),
        ));
        let mut a = a.clone();
        let mut fresh = Request::new(());
        *fresh.headers_mut() = req.headers().clone();
        async move { a.ready().await?.call(fresh).await }
    }));
    client
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    seen.lock().unwrap().clone()
}

async fn check(propagation: Propagation) {
    let seen = run(propagation).await;
    let get = |n| seen.iter().find(|(k, _)| *k == n).unwrap().1;
    let (client, a, b) = (get("client"), get("a"), get("b"));
    assert_eq!(a.trace_id, client.trace_id, "{propagation:?}");
    assert_eq!(b.trace_id, client.trace_id, "{propagation:?}");
    // A's server span is a child of the client's span.
    assert_eq!(a.parent_span_id, Some(client.span_id));
    // B's parent is A's outbound span, whose parent is A's server span: one new span id per hop.
    let a_out = b.parent_span_id.unwrap();
    assert!(a_out != a.span_id && a_out != client.span_id && b.span_id != a_out);
    let ids = [client.span_id, a.span_id, a_out, b.span_id];
    for i in 0..ids.len() {
        for j in i + 1..ids.len() {
            assert_ne!(ids[i], ids[j]);
        }
    }
}

#[tokio::test]
async fn w3c_trace_crosses_two_services() {
    check(Propagation::W3c).await;
}

#[tokio::test]
async fn b3_trace_crosses_two_services() {
    check(Propagation::B3).await;
}

#[tokio::test]
async fn no_incoming_context_starts_a_new_trace() {
    let mut svc =
        TraceLayer::server(Propagation::Both).layer(service_fn(|req: Request<()>| async move {
            Ok::<_, BoxError>(Response::new(
                *req.extensions().get::<TraceContext>().unwrap(),
            ))
        }));
    let mut req = Request::new(());
    req.headers_mut()
        .insert("traceparent", "garbage".parse().unwrap());
    let ctx = svc
        .ready()
        .await
        .unwrap()
        .call(req)
        .await
        .unwrap()
        .into_body();
    assert_eq!(ctx.parent_span_id, None);
}
