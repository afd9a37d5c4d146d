//! The client side: one persistent connection, generated request ids, a deadline per call,
//! typed calls, and endpoint resolution through the registry.
//!
//! A `unix://` endpoint is a plain socket. A `tcp://` endpoint is always mutual TLS: the
//! configuration comes from [`Client::with_tls`], or else from the node's files named by
//! `STRATA_TLS_CA`, `STRATA_TLS_CERT` and `STRATA_TLS_KEY` (loaded once per process).

use crate::endpoint::{Endpoint, EndpointError};
use crate::paths::socket_path;
use crate::tls::{self, TlsError, TlsFiles};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde_json::value::RawValue;
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use strata_frame::frame_codec;
use strata_proto::methods::{registry, Method};
use strata_proto::{
    clip, Auth, ErrorBody, ErrorCode, Request, Response, ServiceName, MAX_ERROR_MESSAGE_LEN,
    MAX_REQ_ID_LEN, PROTOCOL_VERSION,
};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::either::Either;

/// Default deadline for one call, connection included.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call did not get an answer (or got an error answer). Every message names the
/// endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be made.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint called.
        endpoint: String,
        /// Why.
        source: io::Error,
    },
    /// Reading or writing on the connection failed.
    #[error("connection to {endpoint} failed: {source}")]
    Io {
        /// The endpoint called.
        endpoint: String,
        /// Why.
        source: io::Error,
    },
    /// The server closed the connection before answering.
    #[error("{endpoint} closed the connection before answering")]
    Closed {
        /// The endpoint called.
        endpoint: String,
    },
    /// No answer within the call's deadline.
    #[error("{endpoint} did not answer within {after:?}")]
    Timeout {
        /// The endpoint called.
        endpoint: String,
        /// The deadline.
        after: Duration,
    },
    /// A `tcp://` endpoint was called without this node's TLS files.
    #[error(
        "{endpoint} is a tcp endpoint, which needs mutual TLS: set {}, {} and {} to this \
         node's CA certificate, certificate and private key",
        tls::CA_ENV,
        tls::CERT_ENV,
        tls::KEY_ENV
    )]
    TlsRequired {
        /// The endpoint called.
        endpoint: String,
    },
    /// This node's TLS files could not be used.
    #[error("cannot set up TLS for {endpoint}: {source}")]
    TlsSetup {
        /// The endpoint called.
        endpoint: String,
        /// Why.
        source: TlsError,
    },
    /// The handshake failed, or the other end refused this node's certificate.
    #[error("TLS with {endpoint} failed: {source}")]
    Tls {
        /// The endpoint called.
        endpoint: String,
        /// Why.
        source: io::Error,
    },
    /// The answer was not a valid response (or not to this request).
    #[error("protocol error from {endpoint}: {detail}")]
    Protocol {
        /// The endpoint called.
        endpoint: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The server answered with an error.
    #[error("{0}")]
    Server(ErrorBody),
    /// The endpoint's text does not parse.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// A service or node to resolve has a name that breaks the name rule (nothing was
    /// sent: the registry would refuse it, and no socket is named by it).
    #[error("cannot resolve it: the name {0}")]
    BadName(#[from] strata_proto::NameError),
}

impl ClientError {
    /// The protocol code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(e) => Some(e.code),
            _ => None,
        }
    }
}

/// A connection to a Unix socket or, over mutual TLS, to a TCP endpoint.
pub type Stream = Either<UnixStream, TlsStream<TcpStream>>;

/// A framed connection as [`Client::connect_framed`] opens it.
pub type Connection = Framed<Stream, LengthDelimitedCodec>;

/// A connection to one endpoint, opened on first use and reopened after a failure.
pub struct Client {
    endpoint: Endpoint,
    /// For a tcp endpoint: given, or `None` to use the node's files from the environment.
    tls: Option<Arc<ClientConfig>>,
    conn: Option<Connection>,
    call_timeout: Duration,
    token: Option<String>,
    id_prefix: String,
    next_id: u64,
}

impl Client {
    /// A client for `endpoint`; nothing is connected until the first call. A tcp endpoint
    /// uses the TLS files named by the environment (see the module documentation).
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            tls: None,
            conn: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            token: None,
            id_prefix: format!("{:x}", std::process::id()),
            next_id: 0,
        }
    }

    /// A client for a tcp `endpoint` that speaks TLS with `tls` (made by
    /// [`tls::client_config`], say) instead of the environment's files.
    pub fn with_tls(endpoint: Endpoint, tls: Arc<ClientConfig>) -> Client {
        Client {
            tls: Some(tls),
            ..Client::new(endpoint)
        }
    }

    /// A client connected now, so that a wrong endpoint fails here rather than later.
    pub async fn connect(endpoint: Endpoint) -> Result<Client, ClientError> {
        let mut client = Client::new(endpoint);
        let conn = client.connect_framed().await?;
        client.conn = Some(conn);
        Ok(client)
    }

    /// The endpoint this client calls.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Deadline for each call, connecting included.
    pub fn set_timeout(&mut self, call_timeout: Duration) {
        self.call_timeout = call_timeout;
    }

    /// Token sent in `auth` with every call from now on.
    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// Call `M` and decode its result; a server error becomes [`ClientError::Server`].
    pub async fn call<M: Method>(&mut self, params: &M::Params) -> Result<M::Result, ClientError> {
        let raw = serde_json::value::to_raw_value(params).map_err(|e| ClientError::Protocol {
            endpoint: self.endpoint.to_string(),
            detail: format!("params did not serialise: {e}"),
        })?;
        let response = self.call_raw(M::NAME, Some(raw)).await?;
        let result = response.into_result().map_err(ClientError::Server)?;
        serde_json::from_str(result.get()).map_err(|e| ClientError::Protocol {
            endpoint: self.endpoint.to_string(),
            detail: format!("{} result did not decode: {}", M::NAME, bounded_reason(&e)),
        })
    }

    /// Call any method with JSON params; returns the whole response envelope, whether it
    /// says ok or not.
    pub async fn call_raw(
        &mut self,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Result<Response, ClientError> {
        self.next_id += 1;
        let request = Request {
            v: PROTOCOL_VERSION,
            req_id: format!("{}-{}", self.id_prefix, self.next_id),
            method: method.to_owned(),
            auth: self.token.clone().map(|t| Auth { token: Some(t) }),
            params,
        };
        let frame =
            Bytes::from(
                serde_json::to_vec(&request).map_err(|e| ClientError::Protocol {
                    endpoint: self.endpoint.to_string(),
                    detail: format!("request did not serialise: {e}"),
                })?,
            );
        let after = self.call_timeout;
        let reused = self.conn.is_some();
        let first = timeout(after, self.exchange(frame.clone(), &request.req_id)).await;
        let outcome = match first {
            // A reused connection that the server had already closed (idle timeout, or a
            // restart) fails before any answer: that request was never read, so send it
            // once more on a fresh connection.
            Ok(Err(ClientError::Closed { .. })) if reused => {
                timeout(after, self.exchange(frame, &request.req_id)).await
            }
            other => other,
        };
        match outcome {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                // The answer may still arrive later; this connection is out of step.
                self.conn = None;
                Err(ClientError::Timeout {
                    endpoint: self.endpoint.to_string(),
                    after,
                })
            }
        }
    }

    /// Opens a new framed connection to the endpoint (TLS handshake included), without
    /// sending anything: for tools that drive the frames themselves (the benches).
    pub async fn connect_framed(&self) -> Result<Connection, ClientError> {
        let endpoint = || self.endpoint.to_string();
        let connect_err = |source| ClientError::Connect {
            endpoint: endpoint(),
            source,
        };
        let stream = match &self.endpoint {
            Endpoint::Unix(path) => {
                Either::Left(UnixStream::connect(path).await.map_err(connect_err)?)
            }
            Endpoint::Tcp { host, port } => {
                let config = match &self.tls {
                    Some(config) => Arc::clone(config),
                    None => tls_from_env()
                        .map_err(|source| ClientError::TlsSetup {
                            endpoint: endpoint(),
                            source,
                        })?
                        .ok_or_else(|| ClientError::TlsRequired {
                            endpoint: endpoint(),
                        })?,
                };
                // The endpoint's host was checked as a server name when it was parsed.
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| connect_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect_err)?;
                let _ = tcp.set_nodelay(true);
                let tls = TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|source| ClientError::Tls {
                        endpoint: endpoint(),
                        source,
                    })?;
                Either::Right(tls)
            }
        };
        Ok(Framed::new(stream, frame_codec()))
    }

    async fn exchange(&mut self, frame: Bytes, req_id: &str) -> Result<Response, ClientError> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.connect_framed().await?,
        };
        let endpoint = || self.endpoint.to_string();
        if let Err(source) = conn.send(frame).await {
            return Err(if source.kind() == io::ErrorKind::BrokenPipe {
                ClientError::Closed {
                    endpoint: endpoint(),
                }
            } else {
                io_failure(endpoint(), source)
            });
        }
        let reply = match conn.next().await {
            Some(Ok(reply)) => reply,
            // A TLS peer that closes without close_notify reads as an unexpected EOF.
            Some(Err(source))
                if matches!(
                    source.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Err(ClientError::Closed {
                    endpoint: endpoint(),
                })
            }
            Some(Err(source)) => return Err(io_failure(endpoint(), source)),
            None => {
                return Err(ClientError::Closed {
                    endpoint: endpoint(),
                })
            }
        };
        let mut response: Response =
            serde_json::from_slice(&reply).map_err(|e| ClientError::Protocol {
                endpoint: endpoint(),
                detail: format!("response is not a valid envelope: {}", bounded_reason(&e)),
            })?;
        // The server's message is shown to people and logged: held to the bound a
        // well-behaved server keeps anyway.
        if let Some(error) = &mut response.error {
            if error.message.len() > MAX_ERROR_MESSAGE_LEN {
                *error = ErrorBody::new(error.code, std::mem::take(&mut error.message))
                    .with_details(std::mem::take(&mut error.details));
            }
        }
        if response.req_id != req_id {
            // Either the server refused the connection (empty req_id) or it is out of
            // step with us; in both cases the connection is not reused.
            if response.req_id.is_empty() && !response.ok {
                return Ok(response);
            }
            return Err(ClientError::Protocol {
                endpoint: endpoint(),
                detail: format!(
                    "answer for request `{}` arrived while waiting for `{req_id}`",
                    clip(&response.req_id, MAX_REQ_ID_LEN)
                ),
            });
        }
        self.conn = Some(conn);
        Ok(response)
    }
}

/// A decoding error's text, cut to a bound: serde quotes the offending value, which the
/// server chose.
fn bounded_reason(e: &serde_json::Error) -> String {
    clip(&e.to_string(), 256).to_owned()
}

/// A failed read or write; a TLS error (such as the server's alert refusing this node's
/// certificate) is reported as such.
fn io_failure(endpoint: String, source: io::Error) -> ClientError {
    if source.get_ref().is_some_and(|e| e.is::<rustls::Error>()) {
        ClientError::Tls { endpoint, source }
    } else {
        ClientError::Io { endpoint, source }
    }
}

/// The client configuration from the node's files named by the environment: `None` when
/// they are not set. Loaded once per process; a failure is retried on the next call.
fn tls_from_env() -> Result<Option<Arc<ClientConfig>>, TlsError> {
    static LOADED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(config) = LOADED.get() {
        return Ok(Some(Arc::clone(config)));
    }
    let Some(files) = TlsFiles::from_env() else {
        return Ok(None);
    };
    let config = tls::client_config(&files?)?;
    Ok(Some(Arc::clone(LOADED.get_or_init(|| config))))
}

/// Services whose socket is always at the convention, never looked up.
fn resolved_by_convention(service: &str) -> bool {
    matches!(service, "registry" | "supervisor")
}

/// Where `service` listens: asked of the registry (which may answer a `tcp://` endpoint on
/// another node), falling back to `<runtime_dir>/<service>.sock` when the registry is
/// unreachable or does not know it.
pub async fn resolve_endpoint(runtime_dir: &Path, service: &str) -> Result<Endpoint, ClientError> {
    // Checked first: the name becomes a socket path below.
    let service: ServiceName = service.parse()?;
    let fallback = || Endpoint::unix(&socket_path(runtime_dir, &service));
    if resolved_by_convention(&service) {
        return Ok(fallback()?);
    }
    let mut registry = Client::new(fallback_registry(runtime_dir)?);
    registry.set_timeout(Duration::from_secs(2));
    let asked = registry
        .call::<registry::Resolve>(&registry::ServiceParams::new(service.clone()))
        .await;
    match asked {
        Ok(found) => match Endpoint::parse(&found.endpoint) {
            Ok(endpoint) => Ok(endpoint),
            Err(e) => {
                tracing::warn!(%service, error = %e, "registry holds an unusable endpoint; using the convention");
                Ok(fallback()?)
            }
        },
        Err(e) => {
            tracing::debug!(%service, error = %e, "registry lookup failed; using the convention");
            Ok(fallback()?)
        }
    }
}

/// Where `service` listens on cluster node `node`, as this node's registry knows it: this
/// node's own endpoint, or another node's `tcp://` one. No fallback: a service on another
/// node has no conventional socket here.
pub async fn resolve_on_node(
    runtime_dir: &Path,
    service: &str,
    node: &str,
) -> Result<Endpoint, ClientError> {
    let mut registry = Client::new(fallback_registry(runtime_dir)?);
    registry.set_timeout(Duration::from_secs(2));
    let found = registry
        .call::<registry::Resolve>(&registry::ServiceParams {
            service: service.parse()?,
            node: Some(node.parse()?),
        })
        .await?;
    Ok(Endpoint::parse(&found.endpoint)?)
}

fn fallback_registry(runtime_dir: &Path) -> Result<Endpoint, EndpointError> {
    Endpoint::unix(&socket_path(runtime_dir, "registry"))
}

/// A client for `service`, found through [`resolve_endpoint`].
pub async fn connect_service(runtime_dir: &Path, service: &str) -> Result<Client, ClientError> {
    Ok(Client::new(resolve_endpoint(runtime_dir, service).await?))
}
