//! The real [`Images`]: the pool's imgadm store, importing from the configured
//! sources when an image is missing.

use crate::runtime::{Images, ResolvedImage, RuntimeError, ZoneDefaults};
use imgadm::{ImageKind, ImageStore};
use spec::ImageRef;

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

fn reference(r: &ImageRef) -> String {
    spec::manifest::image_text(r)
}

impl Images for StoreImages {
    fn ensure(&self, r: &ImageRef) -> Result<ResolvedImage, RuntimeError> {
        let fail = |message: String| RuntimeError::Image {
            image: reference(r),
            message,
        };
        let installed = self.store.resolve(r).map_err(|e| fail(e.to_string()))?;
        let img = match installed {
            Some(i) => i,
            None => {
                log::info!("image {} is not installed; importing it", reference(r));
                let i = self.store.import_ref(r).map_err(|e| fail(e.to_string()))?;
                log::info!("imported image {} {}@{}", i.uuid, i.name, i.version);
                i
            }
        };
        Ok(ResolvedImage {
            uuid: img.uuid.to_string(),
            path: img.path,
            zvol: img.kind == ImageKind::Zvol,
            zone_defaults: img.manifest.oci().map(|o| {
                let env = o.config.env.iter().filter_map(|kv| kv.split_once('='));
                let env = env.map(|(k, v)| (k.to_string(), v.to_string())).collect();
                ZoneDefaults {
                    init: o.config.command(),
                    env,
                }
            }),
        })
    }
}
