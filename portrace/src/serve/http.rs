//! The HTTP side of `portrace serve`: `/metrics` (the exposition), `/healthz` (200, or 503
//! with the reason), 404 for any other path. It runs on a thread and a runtime of its
//! own, so that a scrape is answered while the tracing thread drains a burst of records.
//! Connections are bounded in number and in time.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::clock::monotonic_ns;
use crate::metrics::health::Health;
use crate::metrics::{to_text_format, Metrics, CONTENT_TYPE as OPENMETRICS_TYPE, TEXT_CONTENT_TYPE};

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed after this long, kept alive or not.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

/// Serves `metrics` and `health` on `listener`, from a new thread, until the process ends.
pub fn spawn(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) -> anyhow::Result<()> {
    listener.set_nonblocking(true).map_err(|e| anyhow::anyhow!("setting up the metrics listener: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the HTTP runtime: {e}"))?;
    std::thread::Builder::new()
        .name("portrace-http".into())
        .spawn(move || runtime.block_on(accept_loop(listener, metrics, health)))
        .map_err(|e| anyhow::anyhow!("cannot start the HTTP thread: {e}"))?;
    Ok(())
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("portrace: cannot serve metrics: {e}");
            return;
        }
    };
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                eprintln!("portrace: accepting a metrics connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let (metrics, health, open) = (metrics.clone(), health.clone(), open.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let openmetrics = wants_openmetrics(req.headers().get(ACCEPT));
                let response = respond(req.method(), req.uri().path(), openmetrics, &metrics, &health);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Whether the client's `Accept` header asks for OpenMetrics (Prometheus does); other
/// clients get the older text format.
fn wants_openmetrics(accept: Option<&HeaderValue>) -> bool {
    accept.and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/openmetrics-text"))
}

/// The answer to `method path`; the metrics in OpenMetrics or in the older text format.
pub fn respond(
    method: &Method,
    path: &str,
    openmetrics: bool,
    metrics: &Metrics,
    health: &Health,
) -> Response<Full<Bytes>> {
    if path != "/metrics" && path != "/healthz" {
        return text(StatusCode::NOT_FOUND, "not found: portrace serves /metrics and /healthz\n");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if path == "/healthz" {
        return match health.verdict(monotonic_ns()) {
            Ok(()) => text(StatusCode::OK, "ok\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}\n")),
        };
    }
    let mut body = String::with_capacity(64 * 1024);
    if metrics.encode(&mut body).is_err() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be encoded\n");
    }
    let (body, content_type) =
        if openmetrics { (body, OPENMETRICS_TYPE) } else { (to_text_format(&body), TEXT_CONTENT_TYPE) };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Feature, Features};
    use http_body_util::BodyExt as _;

    fn body(response: Response<Full<Bytes>>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt.block_on(response.into_body().collect()).unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn paths_and_methods() {
        let metrics = Metrics::new();
        let health = Health::default();
        let r = respond(&Method::GET, "/metrics", true, &metrics, &health);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], OPENMETRICS_TYPE);
        assert!(body(r).ends_with("# EOF\n"));
        let r = respond(&Method::GET, "/metrics", false, &metrics, &health);
        assert_eq!(r.headers()[CONTENT_TYPE], TEXT_CONTENT_TYPE);
        assert!(body(r).contains("# TYPE portrace_sockets gauge"));
        let prometheus = HeaderValue::from_static(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        );
        assert!(wants_openmetrics(Some(&prometheus)));
        assert!(!wants_openmetrics(Some(&HeaderValue::from_static("*/*"))));
        assert!(!wants_openmetrics(None));
        assert_eq!(respond(&Method::GET, "/", false, &metrics, &health).status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&Method::GET, "/metrics/x", false, &metrics, &health).status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&Method::POST, "/metrics", false, &metrics, &health).status(), StatusCode::METHOD_NOT_ALLOWED);

        let r = respond(&Method::GET, "/healthz", false, &metrics, &health);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(r).contains("not attached yet"));
        let mut features = Features::default();
        features.on(Feature::LiveTimeline);
        features.on(Feature::CloseReasons);
        health.started(&features, &crate::metrics::health::needed(false));
        let r = respond(&Method::GET, "/healthz", false, &metrics, &health);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r), "ok\n");
    }
}
