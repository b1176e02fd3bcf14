//! Follows a VM's serial console log (qemu `-serial file:LOG`) as it grows: complete
//! lines, cleaned of carriage returns and terminal escape sequences, each stamped with
//! the time it was first seen (relative to a start instant, e.g. the VM's start).
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One console line and when it was first read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub at: Duration,
    pub text: String,
}

pub struct SerialLog {
    path: PathBuf,
    start: Instant,
    offset: u64,
    partial: Vec<u8>,
    lines: Vec<Line>,
}

impl SerialLog {
    pub fn new(path: &Path, start: Instant) -> SerialLog {
        SerialLog {
            path: path.to_path_buf(),
            start,
            offset: 0,
            partial: vec![],
            lines: vec![],
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last call; returns how many new lines.
    pub fn poll(&mut self) -> usize {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return 0;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return 0;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return 0;
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let at = self.start.elapsed();
        let before = self.lines.len();
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.partial.drain(..=i).collect();
            self.push(at, &raw);
        }
        self.lines.len() - before
    }

    /// Takes an unterminated last line as complete (call once the VM has exited).
    pub fn finish(&mut self) {
        self.poll();
        if !self.partial.is_empty() {
            let raw = std::mem::take(&mut self.partial);
            self.push(self.start.elapsed(), &raw);
        }
    }

    fn push(&mut self, at: Duration, raw: &[u8]) {
        let text = clean(&String::from_utf8_lossy(raw));
        if !text.is_empty() {
            self.lines.push(Line { at, text });
        }
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The first line containing `marker`.
    pub fn find(&self, marker: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.text.contains(marker))
    }

    /// The last `n` lines, joined, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let from = self.lines.len().saturating_sub(n);
        self.lines[from..]
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Drops ANSI/VT100 escape sequences (SeaBIOS and iPXE clear the screen and move the
/// cursor), carriage returns and other control characters; trims the line.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte(0x40..=0x7e); other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_terminal_noise() {
        for (raw, want) in [
            (
                "c\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r",
                "cSeaBIOS (version 1.16.2)",
            ),
            (
                "\x1b[2JXBOOT-BOOTED kernel=6.1 uptime=2.96s\r",
                "XBOOT-BOOTED kernel=6.1 uptime=2.96s",
            ),
            ("plain", "plain"),
            ("\r\r", ""),
        ] {
            assert_eq!(clean(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn follows_a_growing_file() {
        let dir = std::env::temp_dir().join(format!("testlab-serial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("serial.log");
        std::fs::write(&p, "first\r\nsec").unwrap();
        let mut log = SerialLog::new(&p, Instant::now());
        assert_eq!(log.poll(), 1);
        assert_eq!(log.lines()[0].text, "first");
        std::fs::write(&p, "first\r\nsecond\nXBOOT-BOOTED x\nlast").unwrap();
        assert_eq!(log.poll(), 2);
        assert_eq!(log.find("XBOOT-BOOTED").unwrap().text, "XBOOT-BOOTED x");
        assert!(log.find("last").is_none());
        log.finish();
        assert_eq!(log.tail(2), "XBOOT-BOOTED x\nlast");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
