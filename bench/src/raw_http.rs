//! A minimal HTTP/1.1 client for the load loops: one keep-alive connection, a request
//! written as one buffer, the answer read up to its end. reqwest cost the generator about
//! 45 µs of CPU per request, a sixth of the machine at 7,000 requests a second: CPU both
//! systems under test lost alike. This is what wrk does; it speaks only what the two servers
//! answer (Content-Length or chunked bodies).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection to one server, opened on first use and after any error.
pub struct Connection {
    /// host:port
    addr: String,
    /// Everything of the request head but its length.
    head: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Connection {
    /// `url` is `http://host:port`; every request is a POST of JSON to `path`.
    pub fn new(
        url: &str,
        path: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let addr = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("{url}: only http:// URLs"))?
            .trim_end_matches('/')
            .to_string();
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{auth}"
        );
        Ok(Connection {
            addr,
            head,
            stream: None,
            buf: Vec::with_capacity(4096),
            timeout,
        })
    }

    /// Posts `body` and reads the whole answer; the status code, or a short error label.
    pub async fn post(&mut self, body: &str) -> Result<u16, String> {
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(label)) => {
                self.stream = None;
                Err(label)
            }
            Err(_) => {
                self.stream = None;
                Err("timeout".into())
            }
        }
    }

    async fn exchange(&mut self, body: &str) -> Result<u16, String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|_| "connect error".to_string())?;
            stream
                .set_nodelay(true)
                .map_err(|_| "connect error".to_string())?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        let mut request = String::with_capacity(self.head.len() + body.len() + 32);
        request.push_str(&self.head);
        request.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        request.push_str(body);
        let transport = |_| "transport error".to_string();
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(transport)?;
        self.buf.clear();
        loop {
            if let Some(answer) = parse(&self.buf)? {
                if answer.close {
                    self.stream = None;
                }
                return Ok(answer.status);
            }
            let stream = self.stream.as_mut().expect("connected above");
            // read_buf reads into spare capacity only: a full buffer would read 64 bytes a call.
            self.buf.reserve(16 << 10);
            if stream.read_buf(&mut self.buf).await.map_err(transport)? == 0 {
                return Err("transport error".into());
            }
        }
    }
}

/// A complete answer.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    /// The server closes the connection after it.
    close: bool,
}

/// The answer in `buf` if it is complete, None if more bytes are needed.
fn parse(buf: &[u8]) -> Result<Option<Answer>, String> {
    let bad = || "bad answer".to_string();
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(bad)?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad());
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| bad())?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body = &buf[head_end + 4..];
    let complete = if chunked {
        chunked_end(body)?.is_some()
    } else {
        body.len() >= length.unwrap_or(0)
    };
    Ok(complete.then_some(Answer { status, close }))
}

/// Where a chunked body ends, if all of it is in `body`.
fn chunked_end(body: &[u8]) -> Result<Option<usize>, String> {
    let mut at = 0;
    loop {
        let Some(line_end) = find(&body[at..], b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&body[at..at + line_end]).map_err(|_| "bad chunk")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk")?;
        at += line_end + 2;
        if size == 0 {
            // No trailers from these servers: the last chunk ends with an empty line.
            return Ok((body.len() >= at + 2).then_some(at + 2));
        }
        if body.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_complete_only_with_their_whole_body() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 0..plain.len() {
            assert_eq!(parse(&plain[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            parse(plain),
            Ok(Some(Answer {
                status: 200,
                close: false
            }))
        );
        let chunked =
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        for cut in 0..chunked.len() {
            assert_eq!(parse(&chunked[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            parse(chunked),
            Ok(Some(Answer {
                status: 503,
                close: true
            }))
        );
        let no_body = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse(no_body).map(|a| a.map(|a| a.status)), Ok(Some(204)));
        assert!(parse(b"garbage\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
    }
}
