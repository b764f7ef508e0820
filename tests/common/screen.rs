//! What a program writes to a pseudo-terminal, read on a thread of its own and searched by the
//! tests that drive a client through one.

use std::{
    fs::File,
    io::Read,
    sync::mpsc::{self, Receiver},
    time::Instant,
};

use super::process::PROCESS_TIMEOUT;

/// The terminal's output as read so far, and how far the waits have looked.
pub struct Screen {
    chunks: Receiver<Vec<u8>>,
    /// Everything the program has written to the terminal, as read so far.
    shown: Vec<u8>,
    /// How far [`Screen::wait_for`] has looked: each wait finds text that came after the last.
    seen: usize,
}

impl Screen {
    /// Reads `master` (the pseudo-terminal's master side) on a thread that ends with an error
    /// (EIO) once no one holds the slave side any more.
    pub fn read(mut master: File) -> Screen {
        let (sender, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = master.read(&mut buf) {
                if sender.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Screen {
            chunks,
            shown: Vec::new(),
            seen: 0,
        }
    }

    /// Waits (bounded by [`PROCESS_TIMEOUT`]) until `text` shows after what earlier waits
    /// found; returns what came between the end of the previous wait and `text`.
    pub fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            let unseen = &self.shown[self.seen..];
            if let Some(at) = unseen
                .windows(text.len())
                .position(|window| window == text.as_bytes())
            {
                let before = String::from_utf8_lossy(&unseen[..at]).into_owned();
                self.seen += at + text.len();
                return before;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.shown.extend_from_slice(&chunk),
                Err(_) => panic!(
                    "the terminal never showed {text:?}; it showed {:?}",
                    String::from_utf8_lossy(&self.shown)
                ),
            }
        }
    }

    /// Whether anything shown so far (read by earlier waits, or waiting to be read) contains
    /// `text`.
    pub fn shows(&mut self, text: &str) -> bool {
        while let Ok(chunk) = self.chunks.try_recv() {
            self.shown.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&self.shown).contains(text)
    }

    /// What the waits have read so far.
    pub fn shown(&self) -> String {
        String::from_utf8_lossy(&self.shown).into_owned()
    }
}
