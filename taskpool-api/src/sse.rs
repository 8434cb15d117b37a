//! An incremental `text/event-stream` parser: feed it bytes as they arrive, take whole messages.

/// One dispatched SSE message. Comments (heartbeats) are not messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseMessage,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes and returns every message they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_data {
                    out.push(std::mem::take(&mut self.current));
                } else {
                    self.current = SseMessage::default();
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = Some(value.to_owned()),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_split_across_chunks_and_skips_comments() {
        let mut p = SseParser::new();
        assert!(p.feed(b": heartbeat\n\nid: 1\nda").is_empty());
        let msgs = p.feed(b"ta: {\"a\":1}\n\nid: 2\r\ndata: x\r\ndata: y\r\n\r\n");
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].id.as_deref(), Some("1"));
        assert_eq!(msgs[0].data, "{\"a\":1}");
        assert_eq!(msgs[1].id.as_deref(), Some("2"));
        assert_eq!(msgs[1].data, "x\ny");
    }

    #[test]
    fn a_blank_line_without_data_dispatches_nothing() {
        let mut p = SseParser::new();
        assert!(p.feed(b"id: 7\n\n").is_empty());
        assert_eq!(p.feed(b"data: z\n\n")[0].id, None);
    }
}
