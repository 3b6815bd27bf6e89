//! HTTP long-polling: GET receives everything queued, POST delivers a batch of packets.
//!
//! A session has at most one GET and one POST in flight; a second one is a protocol violation that closes
//! the session (the first GET then answers `1`). A GET is held until something is queued; while the session
//! upgrades to websocket every GET is answered `6` at once so the client can finish the upgrade.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::Body;
use super::error::{RequestError, status_response};
use super::packet::decode_payload;
use super::server::{EngineShared, set_static};
use super::session::{CloseReason, ClosedAs, Handshake, Session, TransportFailure, TransportKind};
use super::v3::{self, Protocol};
use super::wire::{WirePacket, polling_body};

/// How long a GET that arrives during an upgrade waits for it to finish before answering `6`.
const UPGRADE_GRACE: Duration = Duration::from_millis(20);

/// Opens a polling session; the response body is the open packet.
pub(crate) fn handshake(engine: &Arc<EngineShared>, handshake: Handshake) -> Response<Body> {
    let session = engine.open_session(TransportKind::Polling, handshake);
    let open = engine.open_packet(session.sid(), TransportKind::Polling);
    match session.protocol() {
        Protocol::V4 => ok_body(open, "text/plain; charset=UTF-8"),
        Protocol::V3 => {
            // `0` then the JSON: the open packet is a packet like the others, length prefix included.
            let packet = WirePacket::text(open[0], &open[1..]);
            let (body, kind) = v3::encode_payload(std::slice::from_ref(&packet), true);
            ok_body(body, kind)
        }
    }
}

/// Resets the in-flight flag of a request even when hyper drops it (client went away).
struct InFlight<'a> {
    session: &'a Session,
    get: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.session.state.lock().end_request(self.get);
    }
}

/// Marks a request in flight, or closes the session if one of the same kind already is.
fn begin<'a>(session: &'a Arc<Session>, get: bool) -> Result<InFlight<'a>, RequestError> {
    let duplicate = !session.state.lock().begin_request(get);
    if duplicate {
        session.close(CloseReason::ProtocolViolation(if get {
            "overlapping polling GET requests"
        } else {
            "overlapping polling POST requests"
        }));
        return Err(RequestError::BadRequest);
    }
    Ok(InFlight { session, get })
}

/// Answers a GET with every packet queued, waiting until there is one.
pub(crate) async fn poll(session: Arc<Session>) -> Response<Body> {
    let _in_flight = match begin(&session, true) {
        Ok(guard) => guard,
        Err(err) => return err.response(),
    };
    let mut packets = Vec::new();
    let mut released_for_upgrade = false;
    // A GET that was already waiting when the upgrade began is released at once (the client waits for it
    // before sending `5`). One that arrives during the upgrade may have been sent after the client's `5`,
    // which the websocket task may not have read yet: it waits a moment for the upgrade to finish first.
    let upgrade_grace = session
        .state
        .lock()
        .is_upgrading()
        .then(|| Instant::now() + UPGRADE_GRACE);
    loop {
        let notified = session.writer.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = session.state.lock();
            if let Some(closed_as) = state.closed_as() {
                session.engine.remove(session.sid());
                if closed_as == ClosedAs::Server {
                    Session::take_queue(&mut state, &mut packets);
                    packets.push(WirePacket::text(b'1', b""));
                } else {
                    packets.push(WirePacket::text(b'6', b""));
                }
                break;
            }
            if state.transport() != TransportKind::Polling {
                // The upgrade finished while this request waited.
                return RequestError::BadRequest.response();
            }
            if state.is_upgrading() && upgrade_grace.is_none_or(|grace| Instant::now() >= grace) {
                packets.push(WirePacket::text(b'6', b""));
                released_for_upgrade = true;
                break;
            }
            if state.has_queued() {
                Session::take_queue(&mut state, &mut packets);
                break;
            }
        }
        match upgrade_grace {
            Some(deadline) => {
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
            None => notified.await,
        }
    }
    if released_for_upgrade {
        // We may have consumed a wake-up meant for the websocket writer: pass it on.
        session.writer.notify_one();
    }
    match session.protocol() {
        Protocol::V4 => ok_body(polling_body(&packets), "text/plain; charset=UTF-8"),
        Protocol::V3 => {
            let (body, kind) = v3::encode_payload(&packets, session.handshake().b64);
            ok_body(body, kind)
        }
    }
}

/// Reads a POST body (bounded by `maxPayload`) and applies its packets before answering `ok`.
pub(crate) async fn post(session: Arc<Session>, req: Request<Incoming>) -> Response<Body> {
    let _in_flight = match begin(&session, false) {
        Ok(guard) => guard,
        Err(err) => return err.response(),
    };
    let binary_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/octet-stream"));
    let protocol = session.protocol();
    if binary_body && protocol == Protocol::V4 {
        session.close(CloseReason::ParseError(
            "binary polling bodies are not part of Engine.IO v4".into(),
        ));
        return RequestError::BadRequest.response();
    }
    let limit = session.config().max_payload;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        session.close(CloseReason::PayloadTooLarge);
        return status_response(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
    }
    let body = match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            session.close(CloseReason::PayloadTooLarge);
            return status_response(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
        }
        Err(err) => {
            session.close(CloseReason::TransportError(TransportFailure {
                kind: std::io::ErrorKind::Other,
                message: err.to_string(),
            }));
            return RequestError::BadRequest.response();
        }
    };
    let decoded = match (protocol, binary_body) {
        (Protocol::V4, _) => decode_payload(body),
        (Protocol::V3, false) => v3::decode_text_payload(body),
        (Protocol::V3, true) => v3::decode_binary_payload(body),
    };
    match decoded {
        Ok(packets) => {
            for packet in packets {
                if session.is_closed() {
                    break;
                }
                session.on_packet(packet);
            }
            let mut resp = Response::new(Body::new(Bytes::from_static(b"ok")));
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            resp
        }
        Err(err) => {
            session.close(CloseReason::ParseError(err.to_string()));
            RequestError::BadRequest.response()
        }
    }
}

fn ok_body(body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from(body)));
    let headers = resp.headers_mut();
    set_static(headers, header::CONTENT_TYPE, content_type);
    set_static(headers, header::CACHE_CONTROL, "no-store");
    resp
}

#[cfg(test)]
mod tests {
    use crate::engineio::EngineConfig;
    use crate::engineio::server::test_support::{echo_engine, http_client, request};

    /// The `sid` of an open packet (`0{"sid":...}`).
    fn sid_of(open: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(&open[1..]).expect("open packet");
        value["sid"].as_str().expect("sid").to_owned()
    }

    #[tokio::test]
    async fn a_polling_session_sends_and_receives_batched_packets() {
        let (engine, _) = echo_engine(EngineConfig::default());
        let mut http = http_client(&engine).await;
        let (status, open) =
            request(&mut http, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        assert_eq!(status, 200);
        let sid = sid_of(&open);
        let uri = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
        assert_eq!(
            request(&mut http, "POST", &uri, "4a\x1e4b").await,
            (200, "ok".to_owned())
        );
        assert_eq!(
            request(&mut http, "GET", &uri, "").await,
            (200, "4a\x1e4b".to_owned())
        );
    }

    #[tokio::test]
    async fn a_v3_polling_session_uses_length_prefixes_and_answers_client_pings() {
        let (engine, _) = echo_engine(EngineConfig::default());
        let mut http = http_client(&engine).await;
        let (status, open) = request(
            &mut http,
            "GET",
            "/socket.io/?EIO=3&transport=polling&b64=1",
            "",
        )
        .await;
        assert_eq!(status, 200);
        let (len, packet) = open.split_once(':').expect("a length prefix");
        assert_eq!(len.parse::<usize>().expect("length"), packet.len());
        let sid = sid_of(packet);
        let uri = format!("/socket.io/?EIO=3&transport=polling&b64=1&sid={sid}");
        assert_eq!(
            request(&mut http, "POST", &uri, "2:4a1:22:4é").await,
            (200, "ok".to_owned())
        );
        assert_eq!(
            request(&mut http, "GET", &uri, "").await,
            (200, "2:4a1:32:4é".to_owned()),
            "echoes in order, the ping answered with a pong"
        );
        assert_eq!(
            request(&mut http, "POST", &uri, "5:4abc").await.0,
            400,
            "a length that does not match its packet closes the session"
        );
    }

    #[tokio::test]
    async fn a_close_packet_ends_the_session_and_its_next_poll_learns_it() {
        let (engine, echo) = echo_engine(EngineConfig::default());
        let mut http = http_client(&engine).await;
        let (_, open) = request(&mut http, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        let uri = format!("/socket.io/?EIO=4&transport=polling&sid={}", sid_of(&open));
        assert_eq!(request(&mut http, "POST", &uri, "1").await.0, 200);
        assert_eq!(
            request(&mut http, "GET", &uri, "").await,
            (200, "6".to_owned())
        );
        assert_eq!(echo.closed.lock().len(), 1);
        assert_eq!(
            request(&mut http, "GET", &uri, "").await.0,
            400,
            "the session is gone"
        );
    }

    #[tokio::test]
    async fn an_oversized_post_is_refused_with_413() {
        let (engine, _) = echo_engine(EngineConfig {
            max_payload: 16,
            ..EngineConfig::default()
        });
        let mut http = http_client(&engine).await;
        let (_, open) = request(&mut http, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        let uri = format!("/socket.io/?EIO=4&transport=polling&sid={}", sid_of(&open));
        let (status, _) = request(&mut http, "POST", &uri, &format!("4{}", "x".repeat(64))).await;
        assert_eq!(status, 413);
    }

    #[tokio::test]
    async fn binary_packets_travel_as_base64() {
        let (engine, _) = echo_engine(EngineConfig::default());
        let mut http = http_client(&engine).await;
        let (_, open) = request(&mut http, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        let uri = format!("/socket.io/?EIO=4&transport=polling&sid={}", sid_of(&open));
        // The echo handler answers text only: a binary message is accepted and not echoed.
        assert_eq!(
            request(&mut http, "POST", &uri, "bAQID\x1e4after").await,
            (200, "ok".to_owned())
        );
        assert_eq!(
            request(&mut http, "GET", &uri, "").await,
            (200, "4after".to_owned())
        );
    }
}
