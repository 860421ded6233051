//! The real [`Images`]: the pool's imgadm store, importing from the configured
//! sources when an image is missing; and [`SharedImports`], which makes instances
//! applied at once share one import of an image and bounds how many run together.

use crate::concurrency::Limit;
use crate::runtime::{Images, ResolvedImage, RuntimeError, ZoneDefaults};
use imgadm::{ImageKind, ImageStore};
use spec::ImageRef;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Images from `<pool>/images`.
pub struct StoreImages {
    store: ImageStore,
}

impl StoreImages {
    /// Wraps an opened store.
    pub fn new(store: ImageStore) -> Self {
        StoreImages { store }
    }
}

/// How `r` is written in a manifest (names it in messages).
pub(crate) fn reference(r: &ImageRef) -> String {
    spec::manifest::image_text(r)
}

/// What the node needs of an installed image.
pub(crate) fn resolved(img: imgadm::Image) -> ResolvedImage {
    // An OCI image's Entrypoint/Cmd, Env, WorkingDir and User: a zone's defaults
    // (docker zones on SmartOS).
    let zone_defaults = img.manifest.oci().map(|o| {
        let env = o.config.env.iter().filter_map(|kv| kv.split_once('='));
        let env = env.map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let said = |s: &str| (!s.is_empty()).then(|| s.to_string());
        ZoneDefaults {
            init: o.config.command(),
            env,
            workdir: said(&o.config.working_dir),
            user: said(&o.config.user),
        }
    });
    ResolvedImage {
        uuid: img.uuid.to_string(),
        path: img.path,
        zvol: img.kind == ImageKind::Zvol,
        zone_defaults,
    }
}

impl Images for StoreImages {
    fn ensure(&self, r: &ImageRef) -> Result<ResolvedImage, RuntimeError> {
        let fail = |message: String| RuntimeError::Image {
            image: reference(r),
            message,
        };
        if let Some(i) = self.installed(r)? {
            return Ok(i);
        }
        log::info!("image {} is not installed; importing it", reference(r));
        let i = self.store.import_ref(r).map_err(|e| fail(e.to_string()))?;
        log::info!("imported image {} {}@{}", i.uuid, i.name, i.version);
        Ok(resolved(i))
    }

    fn installed(&self, r: &ImageRef) -> Result<Option<ResolvedImage>, RuntimeError> {
        installed_in(&self.store, r)
    }
}

/// `r` as installed in `store`, if it is (both importers answer `installed` so).
pub(crate) fn installed_in(
    store: &ImageStore,
    r: &ImageRef,
) -> Result<Option<ResolvedImage>, RuntimeError> {
    store
        .resolve(r)
        .map(|i| i.map(resolved))
        .map_err(|e| RuntimeError::Image {
            image: reference(r),
            message: e.to_string(),
        })
}

/// One import under way, which later askers for the same image wait on.
#[derive(Default)]
struct InFlight {
    result: Mutex<Option<Result<ResolvedImage, RuntimeError>>>,
    done: Condvar,
}

/// Wraps an [`Images`] for concurrent use: an installed image is answered at once; a
/// missing one is imported by the first asker while everyone else asking for the
/// same reference waits for that import's result; imports run at most `limit` at a
/// time. Nothing is cached past an import: the store stays the one truth.
pub struct SharedImports {
    inner: Arc<dyn Images>,
    limit: Limit,
    in_flight: Mutex<HashMap<String, Arc<InFlight>>>,
    /// Told of every import this wrapper ran: `(reference, how long it took)`.
    on_import: Mutex<Option<ImportHook>>,
}

/// What [`SharedImports`] calls after each import it ran (the boot timeline).
pub type ImportHook = Box<dyn Fn(&str, Duration) + Send + Sync>;

impl SharedImports {
    /// Shares `inner`'s imports, `limit` at once.
    pub fn new(inner: Arc<dyn Images>, limit: usize) -> SharedImports {
        SharedImports {
            inner,
            limit: Limit::new(limit),
            in_flight: Mutex::new(HashMap::new()),
            on_import: Mutex::new(None),
        }
    }

    /// Sets (or clears) the hook told of each import.
    pub fn set_import_hook(&self, hook: Option<ImportHook>) {
        *self.on_import.lock().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    fn import(&self, key: &str, r: &ImageRef) -> Result<ResolvedImage, RuntimeError> {
        let (flight, leader) = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(key) {
                Some(f) => (Arc::clone(f), false),
                None => {
                    let f = Arc::new(InFlight::default());
                    map.insert(key.to_string(), Arc::clone(&f));
                    (f, true)
                }
            }
        };
        if !leader {
            let mut result = flight.result.lock().unwrap_or_else(|p| p.into_inner());
            while result.is_none() {
                result = flight.done.wait(result).unwrap_or_else(|p| p.into_inner());
            }
            return result.clone().expect("set before done is signalled");
        }
        let result = {
            let _permit = self.limit.acquire();
            let started = Instant::now();
            let r = self.inner.ensure(r);
            if let Some(hook) = self
                .on_import
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                hook(key, started.elapsed());
            }
            r
        };
        // Publish, then forget: an asker arriving after this finds the image installed
        // (or tries again, if the import failed).
        *flight.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(result.clone());
        flight.done.notify_all();
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        result
    }
}

impl Images for SharedImports {
    fn ensure(&self, r: &ImageRef) -> Result<ResolvedImage, RuntimeError> {
        if let Some(i) = self.inner.installed(r)? {
            return Ok(i);
        }
        self.import(&reference(r), r)
    }

    fn installed(&self, r: &ImageRef) -> Result<Option<ResolvedImage>, RuntimeError> {
        self.inner.installed(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Imports take 200 ms and are counted; nothing is ever installed.
    struct Counting(AtomicUsize);

    impl Images for Counting {
        fn ensure(&self, r: &ImageRef) -> Result<ResolvedImage, RuntimeError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            Ok(ResolvedImage {
                uuid: reference(r),
                path: "/nonexistent".into(),
                zvol: false,
                zone_defaults: None,
            })
        }
    }

    #[test]
    fn concurrent_askers_for_one_image_share_one_import() {
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let shared = SharedImports::new(inner.clone(), 4);
        let r: ImageRef = ImageRef::Name {
            name: "busybox".into(),
            version: Some("1.36".into()),
        };
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| assert_eq!(shared.ensure(&r).unwrap().uuid, "busybox@1.36"));
            }
        });
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
    }
}
