//! What a connection's socket holds that the kernel has not sent yet, so that traffic that can
//! wait is queued only while the socket has room to spare for live events.
//!
//! The queue's two budgets (see the parent module) keep a snapshot from taking room in the
//! *queue* from live events, but beyond the queue lies the socket: a client that reads more
//! slowly than its snapshot streams (one in an interpreted language, or one whose application
//! takes its time with each row) would find the kernel's send buffer, megabytes on a fast
//! link, full of rows. Every live event would then wait in the queue behind all of them, and a
//! pause of the client's shorter than its live budget lasts would still close it as a slow
//! consumer. So waiting traffic is *paced*: before it is queued, [`Backlog::unsent`] must be
//! under the parent's limit, which leaves the rest of the send buffer free for live events when
//! the client pauses. A snapshot then streams as fast as its client reads, a little ahead of it,
//! and a live event is queued behind at most that little, not behind megabytes of rows.
//!
//! Only Linux says how much of a socket's buffer is unsent (`SIOCOUTQNSD`); elsewhere nothing
//! is paced and the queue's budgets are the only bound, as before.

use std::os::fd::{AsRawFd, RawFd};

/// A view of one connection's socket: how many bytes it holds that are not yet on the wire.
///
/// It keeps the socket's descriptor number, not the socket: the session that owns the socket
/// outlives every use of it, and after the socket is closed a stale number reads nothing of
/// consequence (another descriptor's count, or nothing), only until the closing session's
/// senders notice the close.
#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    fd: RawFd,
}

impl Backlog {
    /// The backlog of `socket` (a connected TCP socket).
    pub fn of(socket: &impl AsRawFd) -> Self {
        Self {
            fd: socket.as_raw_fd(),
        }
    }

    /// Bytes written to the socket that the kernel has not sent yet (the peer's window or the
    /// congestion window held them back); `None` where the platform cannot tell.
    pub fn unsent(&self) -> Option<usize> {
        unsent(self.fd)
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn unsent(fd: RawFd) -> Option<usize> {
    let mut bytes: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer, which points to one; on a
    // descriptor that is not a TCP socket the call fails and writes nothing.
    let status = unsafe { libc::ioctl(fd, libc::SIOCOUTQNSD, &mut bytes) };
    (status == 0).then(|| usize::try_from(bytes).unwrap_or(0))
}

#[cfg(not(target_os = "linux"))]
fn unsent(_fd: RawFd) -> Option<usize> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write;

    use super::*;

    /// Bytes pile up as unsent once the peer stops reading and its window closes, and drain
    /// when it reads.
    #[test]
    fn counts_what_the_peer_has_not_taken() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut writer = std::net::TcpStream::connect(addr).expect("connect");
        let (mut reader, _) = listener.accept().expect("accept");
        let backlog = Backlog::of(&writer);
        assert_eq!(backlog.unsent(), Some(0));

        writer.set_nonblocking(true).expect("non-blocking");
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0usize;
        while let Ok(n) = writer.write(&chunk) {
            written += n;
        }
        let unsent = backlog.unsent().expect("a count");
        assert!(unsent > 0 && unsent <= written, "{unsent} of {written}");

        std::io::copy(
            &mut std::io::Read::take(&mut reader, written as u64),
            &mut std::io::sink(),
        )
        .expect("read all");
        assert_eq!(backlog.unsent(), Some(0));
    }

    #[test]
    fn a_descriptor_that_is_no_socket_tells_nothing() {
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        assert_eq!(Backlog::of(&file).unsent(), None);
    }
}
