//! The signed handshake, run by both sides at once.
//!
//! 1. Each side sends `Hello { network, node_id, challenge }` with 32 fresh random bytes.
//! 2. Each side reads the other's `Hello` and checks: same network (else
//!    [`P2pError::WrongNetwork`]), not itself ([`P2pError::SelfConnection`]), the
//!    node id the caller expected if it gave one ([`P2pError::UnexpectedIdentity`]),
//!    a usable ed25519 key.
//! 3. Each side sends `HelloAck { signature }`, signing [`hello_transcript`] with the
//!    *other* side's challenge, its own id as signer and the other's as verifier.
//! 4. Each side verifies the other's signature over the transcript with its *own*
//!    challenge. A replayed `HelloAck` cannot pass: the challenge is fresh.
//!
//! The caller bounds the whole exchange with a deadline (`P2pConfig::handshake_timeout`).

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use vision_chain::{Address, SecretKey, keys};

use crate::error::P2pError;
use crate::message::Message;

/// Domain string at the start of every handshake signature.
pub const HELLO_DOMAIN: &[u8] = b"VISION/p2p-hello/v1";

/// The bytes a `HelloAck` signs: domain, the verifier's challenge, the signer's node
/// id, the verifier's node id, the network magic (little-endian).
pub fn hello_transcript(
    challenge: &[u8; 32],
    signer: &Address,
    verifier: &Address,
    network: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HELLO_DOMAIN.len() + 32 * 3 + 4);
    out.extend_from_slice(HELLO_DOMAIN);
    out.extend_from_slice(challenge);
    out.extend_from_slice(&signer.0);
    out.extend_from_slice(&verifier.0);
    out.extend_from_slice(&network.to_le_bytes());
    out
}

/// 32 bytes from the operating system's random source.
pub(crate) fn fresh_challenge() -> Result<[u8; 32], P2pError> {
    let mut c = [0u8; 32];
    getrandom::fill(&mut c).map_err(|e| P2pError::Io(format!("random source: {e}")))?;
    Ok(c)
}

pub(crate) async fn send<S>(
    framed: &mut Framed<S, LengthDelimitedCodec>,
    msg: &Message,
) -> Result<(), P2pError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    framed.send(msg.to_frame()?).await.map_err(P2pError::from)
}

pub(crate) async fn recv<S>(
    framed: &mut Framed<S, LengthDelimitedCodec>,
) -> Result<Message, P2pError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match framed.next().await {
        Some(Ok(frame)) => Message::decode(&frame),
        Some(Err(e)) => Err(P2pError::from(e)),
        None => Err(P2pError::Closed),
    }
}

/// Run the handshake on a fresh connection; returns the peer's proven node id.
/// The peer's `Hello` must arrive within `silence` (else [`P2pError::Timeout`]
/// `("hello")`); the caller bounds the whole exchange with its own deadline.
///
/// Public so that tools and test harnesses speak 7072 exactly as nodes do.
pub async fn handshake<S>(
    framed: &mut Framed<S, LengthDelimitedCodec>,
    key: &SecretKey,
    network: u32,
    expected: Option<Address>,
    silence: std::time::Duration,
) -> Result<Address, P2pError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let me = key.address();
    let my_challenge = fresh_challenge()?;
    send(
        framed,
        &Message::Hello {
            network,
            node_id: me,
            challenge: my_challenge,
        },
    )
    .await?;
    let first = tokio::time::timeout(silence, recv(framed))
        .await
        .map_err(|_| P2pError::Timeout("hello"))??;
    let (peer, their_challenge) = match first {
        Message::Hello {
            network: got,
            node_id,
            challenge,
        } => {
            if got != network {
                return Err(P2pError::WrongNetwork {
                    expected: network,
                    got,
                });
            }
            (node_id, challenge)
        }
        other => {
            return Err(P2pError::Handshake(format!(
                "expected hello, got {}",
                other.kind()
            )));
        }
    };
    if peer == me {
        return Err(P2pError::SelfConnection);
    }
    if let Some(expected) = expected
        && expected != peer
    {
        return Err(P2pError::UnexpectedIdentity {
            expected,
            got: peer,
        });
    }
    if peer.verifying_key().is_none() {
        return Err(P2pError::Handshake(format!(
            "node id {peer} is not a usable ed25519 key"
        )));
    }
    let signature = key.sign(&hello_transcript(&their_challenge, &me, &peer, network));
    send(framed, &Message::HelloAck { signature }).await?;
    match recv(framed).await? {
        Message::HelloAck { signature } => {
            let transcript = hello_transcript(&my_challenge, &peer, &me, network);
            if !keys::verify(&peer, &transcript, &signature) {
                return Err(P2pError::Handshake(format!(
                    "bad handshake signature from {peer}"
                )));
            }
        }
        other => {
            return Err(P2pError::Handshake(format!(
                "expected hello_ack, got {}",
                other.kind()
            )));
        }
    }
    Ok(peer)
}

/// Dial `addr`, run the handshake expecting `expected`, and hang up: proves that the
/// node listening at a P2P address holds `expected`'s key (an anchor's dial-back of
/// a member's advertised P2P address). The connect and the whole exchange are bounded
/// by `timeout` ([`P2pError::Timeout`]`("dial-back")`).
pub async fn prove_identity(
    addr: &str,
    key: &SecretKey,
    network: u32,
    expected: Address,
    timeout: std::time::Duration,
) -> Result<Address, P2pError> {
    tokio::time::timeout(timeout, async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let mut framed = Framed::new(stream, crate::message::codec());
        handshake(&mut framed, key, network, Some(expected), timeout).await
    })
    .await
    .map_err(|_| P2pError::Timeout("dial-back"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::codec;

    type F = Framed<tokio::io::DuplexStream, LengthDelimitedCodec>;

    /// Run one side to completion, then close its end (so the other side never waits
    /// on a peer that gave up).
    async fn side(
        mut f: F,
        k: &SecretKey,
        net: u32,
        expected: Option<Address>,
    ) -> Result<Address, P2pError> {
        let r = handshake(&mut f, k, net, expected, std::time::Duration::from_secs(5)).await;
        drop(f);
        r
    }

    fn pair() -> (
        Framed<tokio::io::DuplexStream, LengthDelimitedCodec>,
        Framed<tokio::io::DuplexStream, LengthDelimitedCodec>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 16);
        (Framed::new(a, codec()), Framed::new(b, codec()))
    }

    #[tokio::test]
    async fn both_sides_prove_their_keys() {
        let (a, b) = pair();
        let ka = SecretKey::from_seed(&[1; 32]);
        let kb = SecretKey::from_seed(&[2; 32]);
        let (ra, rb) = tokio::join!(side(a, &ka, 7, Some(kb.address())), side(b, &kb, 7, None));
        assert_eq!(ra, Ok(kb.address()));
        assert_eq!(rb, Ok(ka.address()));
    }

    #[tokio::test]
    async fn wrong_network_identity_and_self_are_refused() {
        let ka = SecretKey::from_seed(&[1; 32]);
        let kb = SecretKey::from_seed(&[2; 32]);
        let (a, b) = pair();
        let (ra, _) = tokio::join!(side(a, &ka, 7, None), side(b, &kb, 8, None));
        assert_eq!(
            ra,
            Err(P2pError::WrongNetwork {
                expected: 7,
                got: 8
            })
        );

        let (a, b) = pair();
        let other = SecretKey::from_seed(&[3; 32]).address();
        let (ra, _) = tokio::join!(side(a, &ka, 7, Some(other)), side(b, &kb, 7, None));
        assert!(matches!(ra, Err(P2pError::UnexpectedIdentity { .. })));

        let (a, b) = pair();
        let (ra, rb) = tokio::join!(side(a, &ka, 7, None), side(b, &ka, 7, None));
        assert_eq!(ra, Err(P2pError::SelfConnection));
        assert_eq!(rb, Err(P2pError::SelfConnection));
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_on_its_hello() {
        let ka = SecretKey::from_seed(&[1; 32]);
        let (mut a, _b) = pair();
        let r = handshake(&mut a, &ka, 7, None, std::time::Duration::from_millis(50)).await;
        assert_eq!(r, Err(P2pError::Timeout("hello")));
        assert!(r.unwrap_err().is_misbehaviour());
    }

    #[tokio::test]
    async fn a_forged_ack_is_refused() {
        let ka = SecretKey::from_seed(&[1; 32]);
        let kb = SecretKey::from_seed(&[2; 32]);
        let (a, mut b) = pair();
        let liar = async {
            // claims kb's identity but signs with another key
            send(
                &mut b,
                &Message::Hello {
                    network: 7,
                    node_id: kb.address(),
                    challenge: [9; 32],
                },
            )
            .await
            .unwrap();
            let Ok(Message::Hello { challenge, .. }) = recv(&mut b).await else {
                panic!("no hello")
            };
            let wrong = SecretKey::from_seed(&[5; 32]);
            let sig = wrong.sign(&hello_transcript(
                &challenge,
                &kb.address(),
                &ka.address(),
                7,
            ));
            send(&mut b, &Message::HelloAck { signature: sig })
                .await
                .unwrap();
        };
        let (ra, ()) = tokio::join!(side(a, &ka, 7, None), liar);
        assert!(matches!(ra, Err(P2pError::Handshake(_))), "{ra:?}");
    }
}
