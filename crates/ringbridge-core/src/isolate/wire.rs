//! The control packets between a parent and its kernel host (see the table in [`super`]).
//! Text fields separated by tabs; `%`, tab and newline inside a field are percent-escaped so
//! any message (an NVRTC log, say) survives.
#![forbid(unsafe_code)]

use crate::backend::cuda::Shape;
use crate::backend::user::UserKernel;
use crate::backend::{BackendChoice, LaunchSpec, Launched};
use crate::{Error, ErrorCode};

/// Packet tags.
pub mod tag {
    /// Parent → host: the region's memfd rides on this packet.
    pub const REGION: u8 = b'F';
    /// Host → parent: launched.
    pub const LAUNCHED: u8 = b'L';
    /// Host → parent: an error (launch or join).
    pub const ERROR: u8 = b'E';
    /// Host → parent: doorbell.
    pub const DOORBELL: u8 = b'!';
    /// Host → parent: stopped cleanly.
    pub const DONE: u8 = b'D';
    /// Parent → host: wake the kernel.
    pub const WAKE: u8 = b'w';
    /// Parent → host: stop the kernel.
    pub const JOIN: u8 = b'j';
}

/// Largest packet either side sends (error messages are cut to fit; a launch request carries a
/// user kernel of up to `MAX_USER_SOURCE` bytes, escaped). Below the default socket buffer.
pub const MAX_PACKET: usize = 180 * 1024;

fn escape(field: &str) -> String {
    field.replace('%', "%25").replace('\t', "%09").replace('\n', "%0A")
}

fn unescape(field: &str) -> String {
    field.replace("%0A", "\n").replace("%09", "\t").replace("%25", "%")
}

fn join_fields(tag: u8, fields: &[&str]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(fields.iter().map(|f| escape(f)).collect::<Vec<_>>().join("\t").as_bytes());
    out.truncate(MAX_PACKET);
    out
}

fn split_fields(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body).split('\t').map(unescape).collect()
}

fn malformed(what: &str, packet: &[u8]) -> Error {
    Error::Protocol(format!("malformed {what} packet from the other process: {:?}", String::from_utf8_lossy(packet)))
}

/// What the parent asks the host to run (the ring shapes travel in the region's setup line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRequest {
    /// `auto`, `cpu` or `cuda`.
    pub backend: String,
    /// Built-in handler name.
    pub handler: String,
    /// GPU transport name.
    pub transport: String,
    /// Launch shape, if not the transport's default.
    pub shape: Option<Shape>,
    /// A user kernel, compiled by the host.
    pub user: Option<UserKernel>,
    /// The CUDA device ordinal.
    pub device: u32,
    /// Stages of the same route sent after this one (0: the last, or no route).
    pub following: u32,
}

impl LaunchRequest {
    /// The request for `spec` (isolation is the host's own: it runs the kernel in-process).
    pub fn of(spec: &LaunchSpec<'_>) -> Self {
        Self {
            backend: spec.backend.to_owned(),
            handler: spec.handler.to_owned(),
            transport: spec.transport.to_owned(),
            shape: spec.shape,
            user: spec.user.cloned(),
            device: spec.device,
            following: 0,
        }
    }

    /// The spec the kernel host launches (in its own process).
    pub fn spec(&self) -> LaunchSpec<'_> {
        LaunchSpec {
            transport: &self.transport,
            shape: self.shape,
            user: self.user.as_ref(),
            device: self.device,
            ..LaunchSpec::new(&self.backend, &self.handler)
        }
    }

    /// The packet.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when it would not fit one packet (a huge user kernel).
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let (b, t) = self.shape.map_or((0, 0), |s| (s.blocks, s.threads));
        let mut out = b"launch\t".to_vec();
        let (source, entry, header, replies) =
            self.user.as_ref().map_or(("", "", "", 0), |u| (u.source.as_str(), u.entry.as_str(), u.schema_header.as_str(), u.max_replies));
        let fields = [
            self.backend.as_str(),
            &self.handler,
            &self.transport,
            &b.to_string(),
            &t.to_string(),
            source,
            entry,
            header,
            &replies.to_string(),
            &self.device.to_string(),
            &self.following.to_string(),
        ];
        out.extend_from_slice(fields.iter().map(|f| escape(f)).collect::<Vec<_>>().join("\t").as_bytes());
        if out.len() > MAX_PACKET {
            return Err(Error::InvalidConfig {
                what: "launch request bytes (user kernel source, escaped)".into(),
                value: Some(out.len() as u64),
                expected: format!("at most {MAX_PACKET}"),
            });
        }
        Ok(out)
    }

    /// Parses [`LaunchRequest::encode`]'s packet.
    ///
    /// # Errors
    /// [`Error::Protocol`] for anything else.
    pub fn decode(packet: &[u8]) -> Result<Self, Error> {
        let body = packet.strip_prefix(b"launch\t").ok_or_else(|| malformed("launch", packet))?;
        let f = split_fields(body);
        let [backend, handler, transport, blocks, threads, source, entry, header, replies, device, following] = f.as_slice() else {
            return Err(malformed("launch", packet));
        };
        let num = |s: &str| s.parse::<u32>().map_err(|_| malformed("launch", packet));
        let (blocks, threads, max_replies, device, following) = (num(blocks)?, num(threads)?, num(replies)?, num(device)?, num(following)?);
        let shape = (blocks != 0 || threads != 0).then_some(Shape { blocks, threads });
        let user = (!entry.is_empty()).then(|| UserKernel {
            source: source.clone(),
            entry: entry.clone(),
            schema_header: header.clone(),
            max_replies,
        });
        Ok(Self { backend: backend.clone(), handler: handler.clone(), transport: transport.clone(), shape, user, device, following })
    }
}

/// The host's answer to a launch.
pub fn encode_launched(l: &Launched) -> Vec<u8> {
    join_fields(tag::LAUNCHED, &[l.backend.name, &l.backend.reason, l.transport, &l.transport_reason])
}

/// Parses [`encode_launched`]'s packet.
///
/// # Errors
/// [`Error::Protocol`] for an unknown backend or transport name or a wrong field count.
pub fn decode_launched(packet: &[u8]) -> Result<Launched, Error> {
    let f = split_fields(&packet[1..]);
    let [backend, backend_reason, transport, transport_reason] = f.as_slice() else { return Err(malformed("launched", packet)) };
    let name = *crate::backend::BACKEND_NAMES.iter().find(|n| *n == backend).ok_or_else(|| malformed("launched", packet))?;
    // Any transport a launch reports: the cpu one, or a GPU one (never `auto`, which is resolved).
    let mut known =
        std::iter::once(&crate::backend::CPU_TRANSPORT).chain(crate::backend::cuda::TRANSPORT_NAMES.iter().filter(|t| **t != "auto"));
    let transport = *known.find(|n| *n == transport).ok_or_else(|| malformed("launched", packet))?;
    Ok(Launched { backend: BackendChoice { name, reason: backend_reason.clone() }, transport, transport_reason: transport_reason.clone() })
}

/// An error, with its stable code, as a packet.
pub fn encode_error(e: &Error) -> Vec<u8> {
    join_fields(tag::ERROR, &[e.code().as_str(), &e.to_string()])
}

/// Parses [`encode_error`]'s packet back into an error with the same code and text.
pub fn decode_error(packet: &[u8]) -> Error {
    let f = split_fields(&packet[1..]);
    match f.as_slice() {
        [code, message] => match ErrorCode::ALL.iter().find(|c| c.as_str() == code) {
            Some(code) => Error::Remote { code: *code, message: message.clone() },
            None => malformed("error", packet),
        },
        _ => malformed("error", packet),
    }
}

/// Sends one packet (blocking; never raises SIGPIPE).
///
/// # Errors
/// [`Error::Os`] when the other process is gone (`EPIPE`, `ECONNRESET`) or the send fails
/// otherwise.
pub fn send(socket: &impl std::os::fd::AsFd, packet: &[u8]) -> Result<(), Error> {
    loop {
        match rustix::net::send(socket, packet, rustix::net::SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(super::os_error("send to the other process")(e)),
        }
    }
}

/// Sends one packet if the socket has room now; drops it otherwise (doorbells, wakes: a full
/// socket already holds one).
pub fn send_nowait(socket: &impl std::os::fd::AsFd, packet: &[u8]) {
    let _ = rustix::net::send(socket, packet, rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT);
}

/// What [`try_send`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrySend {
    /// The packet is on its way.
    Sent,
    /// The socket has no room now (the other process is not reading: stopped, or busy).
    Full,
    /// The other process is gone (its end is closed or reset), or the send failed otherwise.
    Gone,
}

/// Sends one packet if the socket has room now, without blocking, and says what happened
/// (a packet that must arrive, unlike [`send_nowait`]'s: the caller retries on `Full`).
pub fn try_send(socket: &impl std::os::fd::AsFd, packet: &[u8]) -> TrySend {
    loop {
        match rustix::net::send(socket, packet, rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT) {
            Ok(_) => return TrySend::Sent,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return TrySend::Full,
            Err(_) => return TrySend::Gone,
        }
    }
}

/// Receives one packet; `None` when the other process closed its end.
///
/// # Errors
/// [`Error::Os`] for a failing socket.
pub fn recv(socket: &impl std::os::fd::AsFd) -> Result<Option<Vec<u8>>, Error> {
    let mut buf = Vec::new();
    Ok(recv_into(socket, &mut buf)?.map(|n| buf[..n].to_vec()))
}

/// [`recv`] into a buffer kept across calls (the reader's hot path: doorbells): the packet is
/// `buf[..n]`.
///
/// # Errors
/// [`Error::Os`] for a failing socket.
pub fn recv_into(socket: &impl std::os::fd::AsFd, buf: &mut Vec<u8>) -> Result<Option<usize>, Error> {
    buf.resize(MAX_PACKET, 0);
    loop {
        match rustix::net::recv(socket, &mut buf[..], rustix::net::RecvFlags::empty()) {
            Ok((0, _)) => return Ok(None),
            Ok((n, _)) => return Ok(Some(n)),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(super::os_error("recv on the control socket")(e)),
        }
    }
}

/// Waits up to `limit` for the socket to have a packet (or be closed); `false` on timeout.
///
/// # Errors
/// [`Error::Os`] for a failing poll.
pub fn readable_within(socket: &impl std::os::fd::AsFd, limit: std::time::Duration) -> Result<bool, Error> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let deadline = crate::host::deadline_after(limit);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = Timespec { tv_sec: left.as_secs() as i64, tv_nsec: i64::from(left.subsec_nanos()) };
        let mut fds = [PollFd::new(socket, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(super::os_error("poll of the control socket")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_request_round_trips_with_awkward_text() {
        for shape in [None, Some(Shape { blocks: 132, threads: 256 })] {
            let user = Some(UserKernel {
                source: "int f() {\n\treturn 1; // 100%\n}".into(),
                entry: "f".into(),
                schema_header: "struct rb_input {};".into(),
                max_replies: 3,
            });
            let r = LaunchRequest {
                backend: "cuda".into(),
                handler: "ec%ho\twith\ntabs".into(),
                transport: "dma".into(),
                shape,
                user,
                device: 3,
                following: 1,
            };
            assert_eq!(LaunchRequest::decode(&r.encode().unwrap()).unwrap(), r);
        }
        assert!(LaunchRequest::decode(b"launch\tcuda\techo").is_err());
        assert!(LaunchRequest::decode(b"nonsense").is_err());
    }

    #[test]
    fn errors_keep_code_and_text() {
        let e = Error::Compile { name: "k.cu".into(), options: "-arch".into(), log: "k.cu(3): error\tbad\n100%".into() };
        let back = decode_error(&encode_error(&e));
        assert_eq!(back.code(), ErrorCode::Compile);
        assert_eq!(back.to_string(), e.to_string());
    }

    #[test]
    fn launched_round_trips() {
        let l = Launched {
            backend: BackendChoice { name: "cuda", reason: "H100\tx".into() },
            transport: "mapped",
            transport_reason: "auto: mapped".into(),
        };
        assert_eq!(decode_launched(&encode_launched(&l)).unwrap(), l);
        assert!(decode_launched(b"Lcuda\tr\tcarrier-pigeon\tr").is_err());
    }
}
