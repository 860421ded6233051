//! The layers of one pull, downloaded on their own thread while the puller unpacks.
//!
//! A pull is download + sha256 (network-bound) then gunzip + untar + writes (CPU and
//! disk): one thread doing both leaves each idle while the other works. Here a
//! downloader thread reads every layer in order, hashing as it goes, and hands the
//! bytes over a bounded channel ([`IN_FLIGHT`] chunks of [`CHUNK`]: memory stays
//! bounded whatever the image's size) to the unpacker, and starts on the next layer
//! while the unpacker finishes the last one. Each layer ends with the downloader's
//! verdict on its size and digest, which the unpacker collects before it goes on.

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::registry::Registry;
use super::Descriptor;
use crate::error::StoreError;

/// Bytes per message.
pub(crate) const CHUNK: usize = 256 << 10;
/// Messages between the threads, at most: with [`CHUNK`], 4 MiB in flight.
pub(crate) const IN_FLIGHT: usize = 16;

/// What crosses from the downloader to the unpacker.
enum Msg {
    /// The next bytes of the current layer.
    Data(Vec<u8>),
    /// The layer is over: verified, or why not.
    End(Result<(), StoreError>),
}

/// Downloads `layers` in order into `tx`; stops at the first failure or when the
/// unpacker hangs up (it failed, or is done).
fn download(reg: &Registry, layers: &[Descriptor], tx: &SyncSender<Msg>) {
    for l in layers {
        let verdict = (|| {
            let mut blob = reg.open_blob(l)?;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = match read_full(&mut blob, &mut buf) {
                    Ok(n) => n,
                    Err(e) => return Err(reg.err(Some(&l.digest), e.to_string())),
                };
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                if tx.send(Msg::Data(buf)).is_err() {
                    return Ok(());
                }
            }
            blob.verify(reg)
        })();
        let failed = verdict.is_err();
        if tx.send(Msg::End(verdict)).is_err() || failed {
            return;
        }
    }
}

/// Fills `buf` unless the stream ends first; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The unpacker's side: one layer at a time, as a reader.
pub(crate) struct Layers {
    rx: Receiver<Msg>,
    buf: Vec<u8>,
    at: usize,
    /// The current layer's verdict, once it arrived.
    end: Option<Result<(), StoreError>>,
}

impl Read for Layers {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            if self.end.is_some() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(b)) => (self.buf, self.at) = (b, 0),
                Ok(Msg::End(r)) => {
                    let failed = r.is_err();
                    self.end = Some(r);
                    if failed {
                        return Err(std::io::Error::other("the layer's download failed"));
                    }
                }
                Err(_) => return Err(std::io::Error::other("the downloader stopped")),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Layers {
    /// Reads what the unpacker left of the current layer (a tar's trailing padding)
    /// and returns the downloader's verdict on it; the next read starts the next layer.
    pub fn finish(&mut self) -> Result<(), StoreError> {
        std::io::copy(self, &mut std::io::sink()).ok();
        let verdict = self
            .end
            .take()
            .unwrap_or_else(|| Err(StoreError::Sources("the downloader stopped".into())));
        (self.buf, self.at) = (Vec::new(), 0);
        verdict
    }

    /// The downloader's verdict when it is an error (after the unpacker failed on the
    /// layer: a lying registry explains a broken tar better than the tar does).
    pub fn failure(&mut self) -> Option<StoreError> {
        while self.end.is_none() {
            match self.rx.recv() {
                Ok(Msg::Data(_)) => {}
                Ok(Msg::End(r)) => self.end = Some(r),
                Err(_) => return None,
            }
        }
        self.end.take().and_then(Result::err)
    }
}

/// Runs `unpack` on the layers as `reg` downloads them on a second thread.
pub(crate) fn with_layers<T>(
    reg: &Registry,
    layers: &[Descriptor],
    unpack: impl FnOnce(&mut Layers) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let (tx, rx) = sync_channel(IN_FLIGHT);
    std::thread::scope(|s| {
        s.spawn(move || download(reg, layers, &tx));
        let mut reader = Layers {
            rx,
            buf: Vec::new(),
            at: 0,
            end: None,
        };
        // Dropping the reader (at the end of this closure) hangs up on the
        // downloader, which then stops; the scope joins it.
        unpack(&mut reader)
    })
}
