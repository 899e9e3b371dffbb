//! A blocking client of habitusd, for the `habitus` command line.

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
    write_message(&mut stream, &Request::new(body)).context("sending the request")?;
    let frame = read_frame(&mut stream).context("reading habitusd's reply")?;
    let response = decode_response(&frame).context("decoding habitusd's reply")?;
    match response.body {
        ResponseBody::Error { kind, message } => bail!("habitusd refused ({kind:?}): {message}"),
        body => Ok(body),
    }
}
