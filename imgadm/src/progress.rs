//! Import progress: a bar on stderr when it is a terminal and the `cli` feature links
//! indicatif; nothing at all in a library build (init imports without a terminal).

use crate::manifest::ImageManifest;
use crate::store::ImageStore;

/// The progress of one import.
pub(crate) struct Progress {
    #[cfg(feature = "cli")]
    bar: indicatif::ProgressBar,
}

impl Progress {
    /// A bar for importing `m`, already at `start` bytes; hidden unless the store
    /// shows progress and stderr is a terminal.
    #[cfg(feature = "cli")]
    pub(crate) fn new(store: &ImageStore, m: &ImageManifest, start: u64) -> Progress {
        use std::io::IsTerminal;
        if !store.shows_progress() || !std::io::stderr().is_terminal() {
            return Progress {
                bar: indicatif::ProgressBar::hidden(),
            };
        }
        let bar = indicatif::ProgressBar::new(m.file().size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(format!("{} ({})", m.uuid, m.name_version()));
        bar.set_position(start);
        Progress { bar }
    }

    /// Without the `cli` feature there is nothing to draw.
    #[cfg(not(feature = "cli"))]
    pub(crate) fn new(_store: &ImageStore, _m: &ImageManifest, _start: u64) -> Progress {
        Progress {}
    }

    /// Bytes received so far.
    pub(crate) fn set_position(&self, _bytes: u64) {
        #[cfg(feature = "cli")]
        self.bar.set_position(_bytes);
    }

    /// Removes the bar once the import is over.
    pub(crate) fn finish_and_clear(&self) {
        #[cfg(feature = "cli")]
        self.bar.finish_and_clear();
    }
}
