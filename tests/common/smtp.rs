//! A real SMTP server on loopback (`tests/support/smtp_server.py`, aiosmtpd), and what it
//! received.

use std::net::TcpStream;

use mailparse::MailHeaderMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct SmtpServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

/// One message as the server stored it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub to: String,
    /// Decoded from its MIME encoded-words.
    pub subject: String,
    /// Raw `Subject:` header as sent.
    pub raw_subject: String,
    /// Decoded from its transfer encoding and charset.
    pub body: String,
}

/// A loopback port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        SmtpServer::start_on(free_port())
    }

    pub fn start_on(port: u16) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .arg(dir.path())
            .spawn()
            .expect("python3 with aiosmtpd (Debian's python3-aiosmtpd) runs the test SMTP server");
        let server = SmtpServer { port, dir, child };
        // Readiness, not timing: wait until it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the test SMTP server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// How the server answers from the next message on (see the script).
    pub fn set_mode(&self, mode: &str) {
        std::fs::write(self.dir.path().join("mode"), mode).unwrap();
    }

    pub fn received(&self) -> Vec<Received> {
        let inbox = self.dir.path().join("inbox");
        let mut files: Vec<_> = std::fs::read_dir(&inbox)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files
            .iter()
            .map(|path| {
                let bytes = std::fs::read(path).unwrap();
                let mail = mailparse::parse_mail(&bytes).unwrap();
                let header = |name: &str| mail.headers.get_first_value(name).unwrap_or_default();
                let raw_subject = mail
                    .headers
                    .iter()
                    .find(|h| h.get_key().eq_ignore_ascii_case("subject"))
                    .map(|h| String::from_utf8_lossy(h.get_value_raw()).into_owned())
                    .unwrap_or_default();
                Received {
                    message_id: header("Message-ID"),
                    to: header("To"),
                    subject: header("Subject"),
                    raw_subject,
                    body: mail.get_body().unwrap(),
                }
            })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
