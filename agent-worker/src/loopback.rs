//! The accept loop of the worker's loopback HTTP servers (the model proxy and the MCP
//! endpoint): one HTTP/1 connection per task, each request answered by the server's handler.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Serves `listener` until the task is aborted, answering each request with
/// `handle(&state, request)`. `what` names the server in logs. An accept error (for example
/// out of file descriptors) is logged and retried after a short pause, never in a tight loop.
pub fn serve<S, H, F, B>(
    listener: TcpListener,
    what: &'static str,
    state: Arc<S>,
    handle: H,
) -> JoinHandle<()>
where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "the {what} could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = handle(state.clone(), req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "a {what} connection ended");
                }
            });
        }
    })
}
