//! Unary gRPC without generated code: a service is a name and a `match` from method name to
//! handler; each handler decodes its request and encodes its answer with `tonic`'s prost codec.
//! The client side (for `vexa-csi-node probe` and the tests) dials a Unix socket.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

/// The answer to one HTTP/2 request of a gRPC call.
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// One gRPC service: its full name and its methods.
pub trait Methods: Clone + Send + Sync + 'static {
    /// `package.Service`.
    const SERVICE: &'static str;
    /// Answers a call of `method`, or `None` when the service has no such method.
    fn call(&self, method: &str, request: http::Request<Body>) -> Option<BoxFuture>;
}

/// A [`Methods`] as a service `tonic`'s server can route to.
#[derive(Debug, Clone)]
pub struct Service<M>(pub M);

impl<M: Methods> NamedService for Service<M> {
    const NAME: &'static str = M::SERVICE;
}

impl<M: Methods> tower::Service<http::Request<Body>> for Service<M> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> BoxFuture {
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        self.0.call(&method, request).unwrap_or_else(|| {
            let status = Status::unimplemented(format!("{} has no method {method:?}", M::SERVICE));
            Box::pin(async move { Ok(status.into_http()) })
        })
    }
}

/// Decodes a unary request, runs `handler` on it and encodes its answer (or its status).
pub fn unary<Req, Resp, F, Fut>(request: http::Request<Body>, handler: F) -> BoxFuture
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    Box::pin(async move {
        // tonic wants a service it may call repeatedly; a unary request calls it once.
        let mut handler = Some(handler);
        let service = tower::service_fn(move |request: tonic::Request<Req>| {
            let handler = handler.take();
            async move {
                let handler =
                    handler.ok_or_else(|| Status::internal("unary handler called twice"))?;
                handler(request.into_inner())
                    .await
                    .map(tonic::Response::new)
            }
        });
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Resp, Req>::default());
        Ok(grpc.unary(service, request).await)
    })
}

/// A channel to a gRPC server on the Unix socket at `socket`.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    // The URI is required by the API and unused: every connection goes to the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

/// Calls `service`/`method` with `request` over `channel`.
pub async fn call<Req, Resp>(
    channel: Channel,
    service: &str,
    method: &str,
    request: Req,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let path = http::uri::PathAndQuery::try_from(format!("/{service}/{method}"))
        .map_err(|e| Status::invalid_argument(format!("bad method path: {e}")))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    let response = grpc
        .unary(
            tonic::Request::new(request),
            path,
            ProstCodec::<Req, Resp>::default(),
        )
        .await?;
    Ok(response.into_inner())
}
