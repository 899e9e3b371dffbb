//! A blocking client of habitusd, for the `habitus` command line.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use habitus_protocol::{
    decode_response, read_frame, write_message, Request, RequestBody, ResponseBody,
};

/// One request, one reply. An error reply becomes an `Err` carrying its message.
pub fn call(socket: &Path, body: RequestBody, timeout: Duration) -> Result<ResponseBody> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach habitusd at {} (is it running? see `systemctl status habitusd`)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write_message(&mut NoSigPipe(&stream), &Request::new(body)).context("sending the request")?;
    let frame = read_frame(&mut stream).context("reading habitusd's reply")?;
    let response = decode_response(&frame).context("decoding habitusd's reply")?;
    match response.body {
        ResponseBody::Error { kind, message } => bail!("habitusd refused ({kind:?}): {message}"),
        body => Ok(body),
    }
}

/// Writes with MSG_NOSIGNAL: `habitus` restores the default SIGPIPE action (so that
/// `habitus … | head` ends quietly), and a habitusd that hangs up mid-request must
/// still be an error with a message, not a silent exit.
struct NoSigPipe<'a>(&'a UnixStream);

impl Write for NoSigPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: the descriptor is open for the borrow's lifetime and `buf` is valid
        // for `buf.len()` bytes.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
