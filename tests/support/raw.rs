//! A WebSocket client on a raw TCP socket, for what a WebSocket library will not do: send
//! malformed frames, or read without ever answering a ping (tungstenite answers on every read).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("upgrade");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.expect("upgrade answer");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        RawClient { stream }
    }

    /// Sends one frame, masked as a client must (mask key 0: the payload goes as is).
    pub async fn frame(&mut self, first: u8, payload: &[u8]) {
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.expect("write frame");
    }

    /// Reads frames, answering none (not even pings), until a close frame; returns its code and
    /// reason (None: the connection ended first, or the close frame had no code). Fails after [`super::WAIT`].
    pub async fn close_frame(&mut self) -> Option<(u16, String)> {
        let read = async {
            loop {
                let mut head = [0u8; 2];
                self.stream.read_exact(&mut head).await.ok()?;
                let len = match head[1] & 0x7f {
                    126 => usize::from(self.stream.read_u16().await.ok()?),
                    127 => usize::try_from(self.stream.read_u64().await.ok()?).ok()?,
                    n => usize::from(n),
                };
                let mut payload = vec![0u8; len];
                self.stream.read_exact(&mut payload).await.ok()?;
                if head[0] & 0x0f == 0x8 {
                    let (code, reason) = payload.split_at_checked(2)?;
                    let code = u16::from_be_bytes([code[0], code[1]]);
                    return Some((code, String::from_utf8_lossy(reason).into_owned()));
                }
            }
        };
        tokio::time::timeout(super::WAIT, read)
            .await
            .expect("the server answered or hung up in time")
    }

    /// The code of the close frame that [`Self::close_frame`] reads.
    pub async fn close_code(&mut self) -> Option<u16> {
        self.close_frame().await.map(|(code, _)| code)
    }
}
