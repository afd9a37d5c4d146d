//! The client side: one persistent connection, generated request ids, a deadline per call,
//! typed calls, and endpoint resolution through the registry.

use crate::endpoint::{Endpoint, EndpointError};
use crate::paths::socket_path;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use std::io;
use std::path::Path;
use std::time::Duration;
use strata_proto::methods::{registry, Method};
use strata_proto::{frame_codec, Auth, ErrorBody, ErrorCode, Request, Response, PROTOCOL_VERSION};
use tokio::net::UnixStream;
use tokio::time::timeout;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Default deadline for one call, connection included.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: io::Error },
    #[error("connection to {endpoint} failed: {source}")]
    Io { endpoint: String, source: io::Error },
    #[error("{endpoint} closed the connection before answering")]
    Closed { endpoint: String },
    #[error("{endpoint} did not answer within {after:?}")]
    Timeout { endpoint: String, after: Duration },
    #[error("protocol error from {endpoint}: {detail}")]
    Protocol { endpoint: String, detail: String },
    /// The server answered with an error.
    #[error("{0}")]
    Server(ErrorBody),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
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

/// A connection to one endpoint, opened on first use and reopened after a failure.
pub struct Client {
    endpoint: Endpoint,
    conn: Option<Framed<UnixStream, LengthDelimitedCodec>>,
    call_timeout: Duration,
    token: Option<String>,
    id_prefix: String,
    next_id: u64,
}

impl Client {
    /// A client for `endpoint`; nothing is connected until the first call.
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            conn: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            token: None,
            id_prefix: format!("{:x}", std::process::id()),
            next_id: 0,
        }
    }

    /// A client connected now, so that a wrong endpoint fails here rather than later.
    pub async fn connect(endpoint: Endpoint) -> Result<Client, ClientError> {
        let mut client = Client::new(endpoint);
        let conn = client.open().await?;
        client.conn = Some(conn);
        Ok(client)
    }

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
            detail: format!("{} result did not decode: {e}", M::NAME),
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

    async fn open(&self) -> Result<Framed<UnixStream, LengthDelimitedCodec>, ClientError> {
        let Endpoint::Unix(path) = &self.endpoint;
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                endpoint: self.endpoint.to_string(),
                source,
            })?;
        Ok(Framed::new(stream, frame_codec()))
    }

    async fn exchange(&mut self, frame: Bytes, req_id: &str) -> Result<Response, ClientError> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.open().await?,
        };
        let endpoint = || self.endpoint.to_string();
        if let Err(source) = conn.send(frame).await {
            return Err(if source.kind() == io::ErrorKind::BrokenPipe {
                ClientError::Closed {
                    endpoint: endpoint(),
                }
            } else {
                ClientError::Io {
                    endpoint: endpoint(),
                    source,
                }
            });
        }
        let reply = match conn.next().await {
            Some(Ok(reply)) => reply,
            Some(Err(source)) if source.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ClientError::Closed {
                    endpoint: endpoint(),
                })
            }
            Some(Err(source)) => {
                return Err(ClientError::Io {
                    endpoint: endpoint(),
                    source,
                })
            }
            None => {
                return Err(ClientError::Closed {
                    endpoint: endpoint(),
                })
            }
        };
        let response: Response =
            serde_json::from_slice(&reply).map_err(|e| ClientError::Protocol {
                endpoint: endpoint(),
                detail: format!("response is not a valid envelope: {e}"),
            })?;
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
                    response.req_id
                ),
            });
        }
        self.conn = Some(conn);
        Ok(response)
    }
}

/// Services whose socket is always at the convention, never looked up.
fn resolved_by_convention(service: &str) -> bool {
    matches!(service, "registry" | "supervisor")
}

/// Where `service` listens: asked of the registry, falling back to
/// `<runtime_dir>/<service>.sock` when the registry is unreachable or does not know it.
pub async fn resolve_endpoint(runtime_dir: &Path, service: &str) -> Result<Endpoint, ClientError> {
    let fallback = || Endpoint::unix(&socket_path(runtime_dir, service));
    if resolved_by_convention(service) {
        return Ok(fallback()?);
    }
    let mut registry = Client::new(fallback_registry(runtime_dir)?);
    registry.set_timeout(Duration::from_secs(2));
    let asked = registry
        .call::<registry::Resolve>(&registry::ServiceParams {
            service: service.to_owned(),
        })
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

fn fallback_registry(runtime_dir: &Path) -> Result<Endpoint, EndpointError> {
    Endpoint::unix(&socket_path(runtime_dir, "registry"))
}

/// A client for `service`, found through [`resolve_endpoint`].
pub async fn connect_service(runtime_dir: &Path, service: &str) -> Result<Client, ClientError> {
    Ok(Client::new(resolve_endpoint(runtime_dir, service).await?))
}
