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
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::clock::monotonic_ns;
use crate::metrics::health::Health;
use crate::metrics::{Metrics, CONTENT_TYPE as METRICS_TYPE};

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
                let response = respond(req.method(), req.uri().path(), &metrics, &health);
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

/// The answer to `method path`.
pub fn respond(method: &Method, path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
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
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_TYPE));
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
        let r = respond(&Method::GET, "/metrics", &metrics, &health);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], METRICS_TYPE);
        assert!(body(r).contains("# TYPE portrace_sockets gauge"));
        assert_eq!(respond(&Method::GET, "/", &metrics, &health).status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&Method::GET, "/metrics/x", &metrics, &health).status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&Method::POST, "/metrics", &metrics, &health).status(), StatusCode::METHOD_NOT_ALLOWED);

        let r = respond(&Method::GET, "/healthz", &metrics, &health);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(r).contains("not attached yet"));
        let mut features = Features::default();
        features.on(Feature::LiveTimeline);
        features.on(Feature::CloseReasons);
        health.started(&features, &crate::metrics::health::needed(false));
        let r = respond(&Method::GET, "/healthz", &metrics, &health);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r), "ok\n");
    }
}
